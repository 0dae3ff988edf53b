"""The MVCC key-value store, kept entirely in LMDB.

Revisions follow etcd: the store starts at revision 1; every write transaction that changes at least one key takes
the next main revision, and its changes are numbered by sub-revision. A delete writes a tombstone; re-creating the key
starts a new generation (new create_revision, version 1).

Two LMDB databases hold the data (so nothing is rebuilt in memory at start-up, whatever the number of keys):

- ``key_index``: key = escape(user key) + TERM + inverted revision; value = 1 flag byte (0 live, 1 tombstone) +
  serialized ``mvccpb.KeyValue``. The escaping (NUL -> NUL 0xFF, then the terminator NUL NUL) keeps user-key order,
  and the inverted revision puts each key's newest version first, so a latest read is one cursor step per key and a
  read at revision R is one seek per key.
- ``revisions``: key = main revision (8 bytes) + sub revision (8 bytes); value = the user key. It orders every change
  by revision, for compaction, hashing and watch history. A key changed twice in one revision (a txn's put, then a
  from-key delete over it) has one ``key_index`` entry for that revision, its last state; each earlier state is kept
  whole in ``revisions`` instead, under main + sub + SUPERSEDED (17 bytes) with the ``key_index`` value format, so
  history replays every sub-revision as etcd does.

Meta: ``rev`` is the current revision and ``compact`` the compact revision (-1 before any compaction), both as
signed 8-byte big-endian integers.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from coord._proto.mvccpb import kv_pb2
from coord.errors import COMPACTED, EMPTY_KEY, FUTURE_REV, ErrorSpec
from coord.server.rejection import Rejected
from coord.server.storage.backend import Backend, from_i64, from_u64, i64, u64

_TERM = b"\x00\x00"
_NEXT = b"\x00\x01"
_MAX_U64 = 0xFFFFFFFFFFFFFFFF
_LIVE = 0
_TOMBSTONE = 1
_SUPERSEDED = b"\x01"  # suffix of a revisions key whose value is an overwritten state, not a user key
_REV_KEY_LEN = 16

META_REVISION = b"rev"
META_COMPACT = b"compact"

# LMDB's key limit (511) minus the terminator and the revision suffix.
MAX_ESCAPED_KEY = 511 - len(_TERM) - 8


class MvccError(Rejected):
    """A request the store refuses (compacted or future revision, missing key); ``spec`` is etcd's error."""


def escape(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff")


# coord's own refusal (etcd has no such limit), with the code etcd uses for a bad key.
KEY_TOO_LONG = ErrorSpec(
    EMPTY_KEY.code,
    "coord: key is too long (at most 501 bytes, counting each NUL byte twice)",
    EMPTY_KEY.exception,
)


def key_fits(key: bytes) -> bool:
    """Whether ``key`` can be stored (LMDB bounds key length; see MAX_ESCAPED_KEY)."""
    return len(key) + key.count(b"\x00") <= MAX_ESCAPED_KEY


def _group(key: bytes) -> bytes:
    return escape(key) + _TERM


def _inv(revision: int) -> bytes:
    return u64(_MAX_U64 - revision)


def range_end_of(range_end: bytes) -> bytes | None:
    """etcd's interpretation of a request's range_end: None = the single key, b"" = every key >= key."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


@dataclass
class RangeResult:
    kvs: list[kv_pb2.KeyValue]
    count: int
    revision: int


@dataclass
class Event:
    """One change made by a write transaction; ``kv`` is the new version (for a delete: the tombstone)."""

    type: int  # kv_pb2.Event.PUT or kv_pb2.Event.DELETE
    kv: kv_pb2.KeyValue
    prev_kv: kv_pb2.KeyValue | None


class MvccReader:
    """A consistent view of the store inside one LMDB transaction (read-only or the apply thread's write txn)."""

    def __init__(self, backend: Backend, txn: Any) -> None:
        self._backend = backend
        self._txn = txn
        self.txn = txn
        raw = txn.get(META_REVISION, db=backend.meta)
        self.current_revision = from_i64(raw) if raw is not None else 1
        raw = txn.get(META_COMPACT, db=backend.meta)
        self.compact_revision = from_i64(raw) if raw is not None else -1

    @property
    def read_revision(self) -> int:
        """The revision that reads in this view see (a write txn sees its own changes)."""
        return self.current_revision

    def check_revision(self, revision: int) -> int:
        """The revision a Range at ``revision`` reads (<= 0 means latest); raises MvccError as etcd does."""
        current = self.read_revision
        if revision > current:
            raise MvccError(FUTURE_REV)
        if revision <= 0:
            revision = current
        if revision < self.compact_revision:
            raise MvccError(COMPACTED)
        return revision

    def range(
        self, key: bytes, end: bytes | None, revision: int, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        """Keys in [key, end) alive at ``revision`` (0 = latest), in key order.

        ``limit`` > 0 returns at most that many key-values; ``count`` always counts every match. Raises MvccError for
        a future or compacted revision.
        """
        at = self.check_revision(revision)
        kvs: list[kv_pb2.KeyValue] = []
        count = 0
        for raw in self.scan(key, end, at):
            count += 1
            if not count_only and (limit <= 0 or len(kvs) < limit):
                kvs.append(kv_pb2.KeyValue.FromString(raw))
        return RangeResult(kvs, count, self.read_revision)

    def scan(self, key: bytes, end: bytes | None, revision: int) -> Iterator[bytes]:
        """Serialized KeyValues of the keys in [key, end) alive at ``revision``, in key order (no revision checks)."""
        db = self._backend.key_index
        latest = revision >= self.read_revision
        with self._txn.cursor(db=db) as cursor:
            if end is None:
                group = _group(key)
                if cursor.set_range(group + _inv(revision)) and cursor.key().startswith(group):
                    value = cursor.value()
                    if value[0] == _LIVE:
                        yield value[1:]
                return
            stop = escape(end) if end else None
            if not cursor.set_range(escape(key)):
                return
            while True:
                ikey = cursor.key()
                if stop is not None and ikey >= stop:
                    return
                group = ikey[:-8]
                if not latest:
                    target = group + _inv(revision)
                    if ikey < target:
                        # The key's newest version is after `revision`: seek its newest version at or before it.
                        if not cursor.set_range(target):
                            return
                        if not cursor.key().startswith(group):
                            continue  # the key did not exist yet; we now stand on the next key
                value = cursor.value()
                if value[0] == _LIVE:
                    yield value[1:]
                if not cursor.set_range(group[:-2] + _NEXT):
                    return

    def get(self, key: bytes) -> kv_pb2.KeyValue | None:
        """The latest live version of ``key``, or None."""
        for raw in self.scan(key, None, self.read_revision):
            return kv_pb2.KeyValue.FromString(raw)
        return None

    def history(self, start: int, end: int, max_events: int) -> tuple[list[tuple[int, list[Event]]], int]:
        """Changes with ``start <= revision <= end``, grouped by revision in order, each event with its previous
        version; stops after the first whole revision that reaches ``max_events`` events. Returns the groups and the
        next revision to read. Revisions below the compact revision may be incomplete: check first.
        """
        groups: list[tuple[int, list[Event]]] = []
        count = 0
        txn = self._txn
        with txn.cursor(db=self._backend.revisions) as revs, txn.cursor(db=self._backend.key_index) as keys:
            if not revs.set_range(u64(max(start, 0)) + u64(0)):
                return groups, end + 1
            for rev_key, stored in revs:
                main = from_u64(rev_key[:8])
                if main > end:
                    break
                if not groups or groups[-1][0] != main:
                    if count >= max_events:
                        return groups, main
                    groups.append((main, []))
                if len(rev_key) > _REV_KEY_LEN:  # an overwritten state of this revision, stored whole
                    value = stored
                    kv = kv_pb2.KeyValue.FromString(value[1:])
                    group = _group(kv.key)
                else:
                    group = _group(stored)
                    if not keys.set_key(group + _inv(main)):
                        continue  # removed by a compaction that raced with this read's caller
                    value = keys.value()
                    kv = kv_pb2.KeyValue.FromString(value[1:])
                # The previous version is the key's state before this revision (etcd's prev_kv: the value at
                # revision - 1), for every state of the key within the revision.
                prev = None
                if (
                    keys.set_key(group + _inv(main))
                    and keys.next()
                    and keys.key().startswith(group)
                    and keys.value()[0] == _LIVE
                ):
                    prev = kv_pb2.KeyValue.FromString(keys.value()[1:])
                kind = kv_pb2.Event.PUT if value[0] == _LIVE else kv_pb2.Event.DELETE
                groups[-1][1].append(Event(kind, kv, prev))
                count += 1
        return groups, end + 1

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The keys currently attached to ``lease_id``, in key order."""
        prefix = i64(lease_id)  # lease ids are int64 and may be negative, as etcd's
        keys: list[bytes] = []
        with self._txn.cursor(db=self._backend.lease_keys) as cursor:
            if not cursor.set_range(prefix):
                return keys
            for raw, _ in cursor:
                if not raw.startswith(prefix):
                    break
                keys.append(raw[8:])
        return keys

    def hash_kv(self, revision: int) -> tuple[int, int]:
        """(hash, hash revision) over every stored change with main revision <= ``revision`` (0 = current; a negative
        revision covers no change at all, as in etcd).

        Deterministic for the same history and compaction, so all members of a cluster agree. Raises MvccError for a
        future or compacted revision.
        """
        if revision > self.current_revision:
            raise MvccError(FUTURE_REV)
        if revision == 0:
            revision = self.current_revision
        if 0 < revision < self.compact_revision:
            raise MvccError(COMPACTED)
        crc = zlib.crc32(b"key")
        index = self._backend.key_index
        with self._txn.cursor(db=self._backend.revisions) as cursor:
            for rev_key, stored in cursor:
                main = from_u64(rev_key[:8])
                if main > revision:
                    break
                crc = zlib.crc32(rev_key, crc)
                if len(rev_key) > _REV_KEY_LEN:
                    crc = zlib.crc32(stored, crc)  # an overwritten state, stored whole
                else:
                    crc = zlib.crc32(self._txn.get(_group(stored) + _inv(main), b"", db=index), crc)
        return crc & 0xFFFFFFFF, revision


@dataclass
class _Pending:
    sub: int = 0
    keys: dict[bytes, int] = field(default_factory=dict)  # key -> sub-revision of its latest change in this revision
    events: list[Event] = field(default_factory=list)


class MvccWriter(MvccReader):
    """The changes of one write transaction (one main revision). Only the apply thread creates writers.

    All changes share revision ``begin_revision + 1``; the revision is only consumed if something changed, which
    ``finish`` records in the meta database within the same LMDB transaction.
    """

    def __init__(self, backend: Backend, txn: Any) -> None:
        super().__init__(backend, txn)
        self.begin_revision = self.current_revision
        self._pending = _Pending()

    @property
    def read_revision(self) -> int:
        return self.begin_revision + 1 if self._pending.sub else self.begin_revision

    @property
    def write_revision(self) -> int:
        return self.begin_revision + 1

    @property
    def changed(self) -> bool:
        return self._pending.sub > 0

    @property
    def events(self) -> list[Event]:
        return self._pending.events

    def _record(self, key: bytes, value: bytes) -> None:
        revision = self.write_revision
        index_key = _group(key) + _inv(revision)
        sub = self._pending.sub
        earlier = self._pending.keys.get(key)
        if earlier is not None:
            # Changed before in this revision (etcd's duplicate check lets a put and a from-key delete overlap): the
            # key index keeps one entry per revision, the last state, so the earlier state moves into its own
            # revisions entry, whole, for history.
            overwritten = self._txn.get(index_key, db=self._backend.key_index)
            self._txn.delete(u64(revision) + u64(earlier), db=self._backend.revisions)
            self._txn.put(u64(revision) + u64(earlier) + _SUPERSEDED, overwritten, db=self._backend.revisions)
        self._pending.keys[key] = sub
        self._txn.put(u64(revision) + u64(sub), key, db=self._backend.revisions)
        self._txn.put(index_key, value, db=self._backend.key_index)
        self._pending.sub += 1

    def _attach(self, key: bytes, old_lease: int, new_lease: int) -> None:
        """Keep the lease -> keys table in step with the key's lease (0 = none)."""
        if old_lease == new_lease:
            return
        if old_lease:
            self._txn.delete(i64(old_lease) + key, db=self._backend.lease_keys)
        if new_lease:
            self._txn.put(i64(new_lease) + key, b"", db=self._backend.lease_keys)

    def put(self, key: bytes, value: bytes, lease: int) -> kv_pb2.KeyValue | None:
        """Write a new version of ``key``; returns the previous live version, if any."""
        prev = self.get(key)
        self._attach(key, prev.lease if prev else 0, lease)
        revision = self.write_revision
        kv = kv_pb2.KeyValue(
            key=key,
            create_revision=prev.create_revision if prev else revision,
            mod_revision=revision,
            version=prev.version + 1 if prev else 1,
            value=value,
            lease=lease,
        )
        self._record(key, bytes((_LIVE,)) + kv.SerializeToString())
        self._pending.events.append(Event(kv_pb2.Event.PUT, kv, prev))
        return prev

    def delete_range(self, key: bytes, end: bytes | None) -> list[kv_pb2.KeyValue]:
        """Tombstone every live key in [key, end); returns their previous versions."""
        prevs = [kv_pb2.KeyValue.FromString(raw) for raw in self.scan(key, end, self.read_revision)]
        revision = self.write_revision
        for prev in prevs:
            self._attach(prev.key, prev.lease, 0)
            tombstone = kv_pb2.KeyValue(key=prev.key, mod_revision=revision)
            self._record(prev.key, bytes((_TOMBSTONE,)) + tombstone.SerializeToString())
            self._pending.events.append(Event(kv_pb2.Event.DELETE, tombstone, prev))
        return prevs

    def compact(self, revision: int) -> None:
        """Drop history below ``revision``: for each key keep only its newest version at or before ``revision``, and
        drop even that if it is a tombstone. Reading at ``revision`` itself keeps working. Raises MvccError when
        ``revision`` is already compacted or in the future.
        """
        if revision <= self.compact_revision:
            raise MvccError(COMPACTED)
        if revision > self.current_revision:
            raise MvccError(FUTURE_REV)
        index = self._backend.key_index
        txn = self._txn
        with txn.cursor(db=self._backend.revisions) as revs, txn.cursor(db=index) as keys:
            positioned = revs.first()
            while positioned:
                rev_key = revs.key()
                main = from_u64(rev_key[:8])
                if main > revision:
                    break
                if len(rev_key) > _REV_KEY_LEN:
                    # An overwritten state: never the newest at or before ``revision`` (its revision's last state is).
                    positioned = revs.delete()
                    if positioned and not revs.key():
                        positioned = False
                    continue
                user_key = revs.value()
                group = _group(user_key)
                found = keys.set_range(group + _inv(revision)) and keys.key().startswith(group)
                newest = _MAX_U64 - from_u64(keys.key()[-8:]) if found else main
                # A revisions entry without its version (not written since the fix above) is dropped as well.
                if not found or main < newest or keys.value()[0] == _TOMBSTONE:
                    txn.delete(group + _inv(main), db=index)
                    positioned = revs.delete()
                    if positioned and not revs.key():
                        positioned = False
                else:
                    positioned = revs.next()
        txn.put(META_COMPACT, i64(revision), db=self._backend.meta)
        self.compact_revision = revision

    def finish(self) -> int:
        """Record the new current revision if anything changed; returns the store's revision after this txn."""
        if self._pending.sub:
            self.current_revision = self.begin_revision + 1
            self._txn.put(META_REVISION, i64(self.current_revision), db=self._backend.meta)
        return self.current_revision
