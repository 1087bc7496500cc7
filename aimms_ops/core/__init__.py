"""The bottom layer: facts and rules both sides of the SSH connection share (standard library
only; the host runs them in the host program, under its own python3)."""

#: The oldest python3 the host program runs on (Amazon Linux 2's); ``make lint`` checks
#: core, dump and agent against it (vermin), ``fab doctor`` checks the host's.
HOST_PYTHON = (3, 7)
