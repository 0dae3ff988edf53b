"""The Raft log, hard state and snapshot record on LMDB: the ``coord.server.raft.Storage`` of a member.

Layout: the ``log`` database maps index (8 big-endian bytes) to term (8) + entry type (1) + data, as
:class:`~coord.server.storage.log.LogEntry` encodes it. The meta database holds the hard state (term, vote, commit)
under ``raft_hard_state`` and the compaction point under ``raft_snapshot``: the index and term of the last entry
folded into the state machine and dropped from the log, with the membership as of that entry. The state machine
itself lives in the same LMDB environment, so "the snapshot" is always the current state: a follower that needs one
receives a copy of the state machine databases (see ``coord.server.peer.snapshot``).

Writes happen in the node's commit thread inside its one write transaction per Ready (:meth:`persist`); the
in-memory view the Raft core reads (last index, recent entries) is updated by :meth:`persisted` on the event loop
once that transaction committed, before ``RawNode.advance``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from coord.server.raft import (
    CompactedError,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
    UnavailableError,
)
from coord.server.raft.storage import limit_size
from coord.server.storage.backend import Backend, from_u64, u64
from coord.server.storage.log import LogEntry

META_HARD_STATE = b"raft_hard_state"
META_SNAPSHOT = b"raft_snapshot"

_HARD = struct.Struct(">QQQ")
_SNAP_HEAD = struct.Struct(">QQI")
# Recent entries kept in memory so that replication to followers rarely reads LMDB.
_CACHE_ENTRIES = 4096


def encode_conf_state(cs: ConfState) -> bytes:
    voters, learners = sorted(cs.voters), sorted(cs.learners)
    return struct.pack(f">I{len(voters)}QI{len(learners)}Q", len(voters), *voters, len(learners), *learners)


def decode_conf_state(raw: bytes) -> ConfState:
    (nv,) = struct.unpack_from(">I", raw, 0)
    voters = list(struct.unpack_from(f">{nv}Q", raw, 4))
    offset = 4 + 8 * nv
    (nl,) = struct.unpack_from(">I", raw, offset)
    learners = list(struct.unpack_from(f">{nl}Q", raw, offset + 4))
    return ConfState(voters=voters, learners=learners)


def encode_snapshot_record(meta: SnapshotMetadata) -> bytes:
    cs = encode_conf_state(meta.conf_state)
    return _SNAP_HEAD.pack(meta.index, meta.term, len(cs)) + cs


def decode_snapshot_record(raw: bytes) -> SnapshotMetadata:
    index, term, size = _SNAP_HEAD.unpack_from(raw)
    cs = decode_conf_state(raw[_SNAP_HEAD.size : _SNAP_HEAD.size + size])
    return SnapshotMetadata(conf_state=cs, index=index, term=term)


def _to_raft(entry: LogEntry) -> Entry:
    return Entry(term=entry.term, index=entry.index, type=EntryType(entry.type), data=entry.data)


class RaftStorage:
    """Implements ``coord.server.raft.Storage`` over the member's LMDB environment.

    ``snapshot_source`` tells what a snapshot sent now would cover (index, term and membership of the state machine
    as the node last applied it); the data itself is streamed by the peer layer.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.snapshot_source: Callable[[], SnapshotMetadata] | None = None
        with backend.read() as txn:
            raw_hs = txn.get(META_HARD_STATE, db=backend.meta)
            raw_snap = txn.get(META_SNAPSHOT, db=backend.meta)
            with txn.cursor(db=backend.log) as cursor:
                last_logged = from_u64(cursor.key()) if cursor.last() else 0
        self.hard_state = HardState(*_HARD.unpack(raw_hs)) if raw_hs else HardState()
        self.snap = decode_snapshot_record(raw_snap) if raw_snap else SnapshotMetadata()
        self._last = max(last_logged, self.snap.index)
        self._cache: list[Entry] = []  # contiguous, ending at self._last when not empty

    @property
    def initialized(self) -> bool:
        """Whether this member has Raft state (bootstrapped, or joined and received a snapshot)."""
        return self.snap.index > 0

    # -- Storage protocol (event loop) ---------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        cs = self.snap.conf_state
        return HardState(self.hard_state.term, self.hard_state.vote, self.hard_state.commit), ConfState(
            list(cs.voters), list(cs.learners)
        )

    def first_index(self) -> int:
        return self.snap.index + 1

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        if index < self.snap.index:
            raise CompactedError(f"index {index} is compacted (snapshot at {self.snap.index})")
        if index > self._last:
            raise UnavailableError(f"index {index} is past the last index {self._last}")
        if index == self.snap.index:
            return self.snap.term
        cached = self._cached(index)
        if cached is not None:
            return cached.term
        with self._backend.read() as txn:
            raw = txn.get(u64(index), db=self._backend.log)
        if raw is None:
            raise UnavailableError(f"log entry {index} is missing")
        return from_u64(raw[:8])

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo <= self.snap.index:
            raise CompactedError(f"index {lo} is compacted (first index {self.snap.index + 1})")
        if hi > self._last + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last index {self._last}")
        if lo >= hi:
            return []
        if self._cache and lo >= self._cache[0].index:
            start = lo - self._cache[0].index
            return limit_size(self._cache[start : start + (hi - lo)], max_bytes)
        out: list[Entry] = []
        size = 0
        with self._backend.read() as txn, txn.cursor(db=self._backend.log) as cursor:
            if cursor.set_key(u64(lo)):
                for key, value in cursor:
                    index = from_u64(key)
                    if index >= hi:
                        break
                    entry = _to_raft(LogEntry.decode(index, value))
                    size += entry.size()
                    if out and size > max_bytes:
                        break
                    out.append(entry)
        if len(out) == 0:
            raise UnavailableError(f"log entry {lo} is missing")
        return out

    def snapshot(self) -> Snapshot:
        """What a snapshot sent now covers; its data travels separately, so ``data`` is empty."""
        if self.snapshot_source is None:
            return Snapshot(metadata=self.snap)
        return Snapshot(metadata=self.snapshot_source())

    def _cached(self, index: int) -> Entry | None:
        if self._cache and self._cache[0].index <= index <= self._last:
            return self._cache[index - self._cache[0].index]
        return None

    # -- writes (commit thread, inside the Ready's write transaction) --------------------------------------------

    def persist(
        self,
        txn: Any,
        entries: list[Entry],
        hard_state: HardState | None,
        snapshot: SnapshotMetadata | None,
    ) -> None:
        """Write a Ready's snapshot record, entries and hard state into ``txn``. A snapshot replaces the whole log;
        entries replace any logged suffix from their first index on."""
        db = self._backend.log
        if snapshot is not None:
            txn.drop(db, delete=False)
            txn.put(META_SNAPSHOT, encode_snapshot_record(snapshot), db=self._backend.meta)
        if entries:
            first = entries[0].index
            last_logged = snapshot.index if snapshot is not None else self._last
            if first <= last_logged:
                with txn.cursor(db=db) as cursor:
                    if cursor.set_range(u64(first)):
                        while cursor.delete():
                            pass
            for entry in entries:
                record = LogEntry(entry.index, entry.term, int(entry.type), entry.data)
                txn.put(u64(entry.index), record.encode(), db=db)
        if hard_state is not None:
            txn.put(
                META_HARD_STATE, _HARD.pack(hard_state.term, hard_state.vote, hard_state.commit), db=self._backend.meta
            )

    def persisted(self, entries: list[Entry], hard_state: HardState | None, snapshot: SnapshotMetadata | None) -> None:
        """On the event loop, after ``persist``'s transaction committed: update the view the Raft core reads."""
        if snapshot is not None:
            self.snap = snapshot
            self._last = snapshot.index
            self._cache = []
        if entries:
            first = entries[0].index
            if self._cache and first <= self._last:
                keep = first - self._cache[0].index
                self._cache = self._cache[: max(0, keep)]
            if self._cache and self._cache[-1].index + 1 != first:
                self._cache = []
            self._cache.extend(entries)
            if len(self._cache) > _CACHE_ENTRIES:
                self._cache = self._cache[-_CACHE_ENTRIES:]
            self._last = entries[-1].index
        if hard_state is not None:
            self.hard_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)

    def compact(self, txn: Any, index: int, conf_state: ConfState) -> SnapshotMetadata:
        """Move the compaction point to ``index`` (applied, and still in the log) in ``txn``; entries up to it may
        then be trimmed. Returns the new record; call :meth:`compacted` once ``txn`` committed."""
        meta = SnapshotMetadata(conf_state=ConfState(list(conf_state.voters), list(conf_state.learners)))
        meta.index = index
        meta.term = self.term(index)
        txn.put(META_SNAPSHOT, encode_snapshot_record(meta), db=self._backend.meta)
        return meta

    def compacted(self, meta: SnapshotMetadata) -> None:
        if meta.index > self.snap.index:
            self.snap = meta
            if self._cache and self._cache[0].index <= meta.index:
                self._cache = self._cache[meta.index - self._cache[0].index + 1 :]

    def trim(self, txn: Any, limit: int) -> int:
        """Delete at most ``limit`` of the oldest logged entries at or below the compaction point."""
        deleted = 0
        with txn.cursor(db=self._backend.log) as cursor:
            if not cursor.first():
                return 0
            while deleted < limit:
                key = cursor.key()
                if not key or from_u64(key) > self.snap.index or not cursor.delete():
                    break
                deleted += 1
        return deleted

    def bootstrap(self, txn: Any, conf_state: ConfState) -> SnapshotMetadata:
        """Initial member of a new cluster: the log starts after a snapshot at index 1, term 1 that holds the initial
        membership (every initial member writes the same one)."""
        meta = SnapshotMetadata(conf_state=conf_state, index=1, term=1)
        hs = HardState(term=1, vote=0, commit=1)
        txn.put(META_SNAPSHOT, encode_snapshot_record(meta), db=self._backend.meta)
        txn.put(META_HARD_STATE, _HARD.pack(hs.term, hs.vote, hs.commit), db=self._backend.meta)
        return meta

    def bootstrapped(self, meta: SnapshotMetadata) -> None:
        self.snap = meta
        self._last = max(self._last, meta.index)
        self.hard_state = HardState(term=1, vote=0, commit=1)
