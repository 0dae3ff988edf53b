"""The storage seam of the Raft core: what it reads from stable storage, and an in-memory implementation.

The Raft core only reads through ``Storage``; the caller writes (``Ready.entries``, ``Ready.hard_state``,
``Ready.snapshot``) with whatever durable store it owns, before calling ``RawNode.advance``.
"""

from __future__ import annotations

import copy
from typing import Protocol

from .types import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
    UnavailableError,
)

NO_LIMIT = 1 << 62


class Storage(Protocol):
    """Read access to the durable Raft log, hard state and latest snapshot.

    The log is conceptually ``[first_index() - 1, last_index()]``: index ``first_index() - 1`` is the last entry
    of the latest snapshot, whose term is still available through ``term``; entries before it were compacted.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The saved hard state and the membership as of the latest snapshot (or the bootstrap membership)."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries with ``lo <= index < hi``, in order, totalling at most ``max_bytes`` (but at least one entry
        when ``lo < hi``). Raises CompactedError if ``lo < first_index()`` and UnavailableError if
        ``hi > last_index() + 1``."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``, for ``first_index() - 1 <= index <= last_index()``. Raises
        CompactedError below that range and UnavailableError above it."""
        ...

    def first_index(self) -> int:
        """Index of the first entry available through ``entries`` (the snapshot index plus one)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry in the log (the snapshot index when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot. May raise SnapshotTemporarilyUnavailableError; the leader then retries."""
        ...


def limit_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes``, but never fewer than one entry."""
    if not entries:
        return entries
    total = entries[0].size()
    for i in range(1, len(entries)):
        total += entries[i].size()
        if total > max_bytes:
            return entries[:i]
    return entries


class MemoryStorage:
    """An in-memory ``Storage`` for tests, the simulator and bootstrapping; also writable like a real store.

    Invariant: ``self._ents[0]`` is a dummy entry holding the snapshot's index and term.
    """

    def __init__(self) -> None:
        """An empty log with no membership: a node that joins an existing cluster and waits for its leader."""
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    @classmethod
    def bootstrap(cls, conf_state: ConfState, data: bytes = b"") -> MemoryStorage:
        """Storage of an initial member of a new cluster: a snapshot at index 1, term 1 holding the initial
        membership (and state machine ``data``). Every initial member must start from the same bootstrap; nodes
        added later start empty and receive a snapshot, so they never replay entries without knowing the
        membership those entries were appended under."""
        storage = cls()
        meta = SnapshotMetadata(conf_state=copy.deepcopy(conf_state), index=1, term=1)
        storage.apply_snapshot(Snapshot(data=data, metadata=meta))
        storage.hard_state = HardState(term=1, commit=1)
        return storage

    # -- Storage protocol -------------------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return copy.copy(self.hard_state), copy.deepcopy(self._snapshot.metadata.conf_state)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last index {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes, as the caller performs them ------------------------------------------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self.hard_state = copy.copy(hard_state)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot``. Raises SnapshotOutOfDateError if it is older than ours."""
        if snapshot.metadata.index < self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(f"snapshot {snapshot.metadata.index} < {self._snapshot.metadata.index}")
        self._snapshot = snapshot
        self._ents = [Entry(term=snapshot.metadata.term, index=snapshot.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at applied ``index`` (which must be in the log)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(f"snapshot {index} <= {self._snapshot.metadata.index}")
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} > last index {self.last_index()}")
        meta = SnapshotMetadata(conf_state=copy.deepcopy(conf_state), index=index, term=self.term(index))
        self._snapshot = Snapshot(data=data, metadata=meta)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index``; that entry becomes the dummy. Requires a snapshot covering
        it is already recorded (or the entries are otherwise recoverable)."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError(f"index {compact_index} is already compacted")
        if compact_index > self.last_index():
            raise UnavailableError(f"compact index {compact_index} > last index {self.last_index()}")
        i = compact_index - offset
        self._ents = [Entry(term=self._ents[i].term, index=compact_index), *self._ents[i + 1 :]]

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries``, replacing any existing suffix they conflict with (Raft §5.3)."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return  # all already compacted
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(f"missing log entry before {entries[0].index} (last {self.last_index()})")
        self._ents = self._ents[:offset] + list(entries)
