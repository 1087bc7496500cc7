"""aimms-ops: back up and recover the PostgreSQL database of a Docker Compose stack over SSH."""

__version__ = "0.1.0"
