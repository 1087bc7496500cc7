"""The host program: aimms-ops' logic that runs on the host, under its python3 (3.7+,
standard library only), installed beside the backup script as one zipapp
(``aimms-ops.pyz``) and sent once per version for one-shot calls (``host.bundle``).

It imports the same modules as the operator's side for every fact both share (the
backup names, retention, the size-drop guard, the lock, the units): ``aimms_ops.core``.
The shell scripts keep only the pipelines of the host's tools and call it for the rest.
"""
