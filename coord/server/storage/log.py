"""The durable log of requests: what a member has accepted, in order, before it is applied.

Layout of the ``log`` database: key = index as 8 big-endian bytes; value = term (8 bytes) + entry type (1 byte) +
data. Indexes are contiguous from ``first_index`` to ``last_index``. Entries at or below the applied index may be
trimmed (log compaction); the applied index itself lives in the meta database, written in the same transaction as the
state it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coord.server.storage.backend import Backend, from_u64, u64

ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class LogEntry:
    index: int
    term: int
    type: int
    data: bytes

    def encode(self) -> bytes:
        return u64(self.term) + bytes((self.type,)) + self.data

    @classmethod
    def decode(cls, index: int, raw: bytes) -> LogEntry:
        return cls(index, from_u64(raw[:8]), raw[8], bytes(raw[9:]))


class DurableLog:
    """Append, read and trim log entries inside the caller's LMDB transactions."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def append(self, txn: Any, entries: list[LogEntry]) -> None:
        """Write ``entries`` (contiguous, following the current last index) in the caller's write transaction."""
        db = self._backend.log
        for entry in entries:
            txn.put(u64(entry.index), entry.encode(), db=db, append=True)

    def last_index(self, txn: Any) -> int:
        """The index of the newest entry, or 0 for an empty log."""
        with txn.cursor(db=self._backend.log) as cursor:
            return from_u64(cursor.key()) if cursor.last() else 0

    def first_index(self, txn: Any) -> int:
        """The index of the oldest entry kept, or 0 for an empty log."""
        with txn.cursor(db=self._backend.log) as cursor:
            return from_u64(cursor.key()) if cursor.first() else 0

    def entries(self, txn: Any, lo: int, hi: int) -> list[LogEntry]:
        """Entries with ``lo <= index < hi`` that are still kept, in order."""
        out: list[LogEntry] = []
        with txn.cursor(db=self._backend.log) as cursor:
            if not cursor.set_range(u64(lo)):
                return out
            for key, value in cursor:
                index = from_u64(key)
                if index >= hi:
                    break
                out.append(LogEntry.decode(index, value))
        return out

    def trim(self, txn: Any, upto: int, limit: int) -> int:
        """Delete at most ``limit`` of the oldest entries with index <= ``upto``; returns how many were deleted.

        Bounded so that one write transaction never stalls the write path for long; callers trim a little on every
        batch.
        """
        deleted = 0
        with txn.cursor(db=self._backend.log) as cursor:
            if not cursor.first():
                return 0
            while deleted < limit:
                key = cursor.key()
                if not key or from_u64(key) > upto or not cursor.delete():
                    break
                deleted += 1
        return deleted
