"""Point-in-time recovery on pgBackRest (opt-in, ``pitr:`` in the inventory): its state
(``state.py``), turning it on and off (``setup.py``), the restore to a moment
(``restore.py``). The host's side is ``agent/pitr.py``; the shared facts ``core/pitr.py``."""
