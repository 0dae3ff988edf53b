"""On-disk state: one LMDB environment holding the durable log, the MVCC store and their metadata."""

from coord.server.storage.backend import Backend, from_u64, u64
from coord.server.storage.log import DurableLog, LogEntry

__all__ = ["Backend", "DurableLog", "LogEntry", "from_u64", "u64"]
