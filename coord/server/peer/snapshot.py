"""Snapshot data: a copy of the state machine databases, streamed leader -> follower in chunks.

The state machine is every database listed in ``storage.backend.STATE_DBS`` plus the replicated keys of ``meta``
(revision counters, compaction point, applied index, ...). One read transaction gives a consistent copy at some
applied index ``A``; the follower installs it in one write transaction and then skips log entries up to ``A`` (the
applier compares each entry's index with the applied index stored in the same transaction), so a copy taken later
than the snapshot's Raft index is still exact.

Record format, repeated: 2-byte name length, database name, 4-byte key length, key, 4-byte value length, value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from coord.server.membership import LOCAL_META_KEYS
from coord.server.storage.backend import DB_META, Backend
from coord.server.storage.raft_storage import META_HARD_STATE, META_SNAPSHOT

CHUNK_BYTES = 1 << 20
_LOCAL_META = LOCAL_META_KEYS | {META_HARD_STATE, META_SNAPSHOT}
_NAME = struct.Struct(">H")
_LEN = struct.Struct(">I")


def _record(name: bytes, key: bytes, value: bytes) -> bytes:
    return b"".join((_NAME.pack(len(name)), name, _LEN.pack(len(key)), key, _LEN.pack(len(value)), value))


def state_chunks(backend: Backend, txn: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The state machine as seen by ``txn`` (a read transaction), in chunks of about ``chunk_bytes``."""
    buffer: list[bytes] = []
    size = 0
    sources = [(DB_META, backend.meta), *backend.state_dbs().items()]
    for name, db in sources:
        with txn.cursor(db=db) as cursor:
            for key, value in cursor:
                if name == DB_META and key in _LOCAL_META:
                    continue
                record = _record(name, key, value)
                buffer.append(record)
                size += len(record)
                if size >= chunk_bytes:
                    yield b"".join(buffer)
                    buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError("truncated snapshot data")
    return data


def install_state(backend: Backend, txn: Any, path: Path) -> None:
    """Replace the state machine with the records in ``path``, inside ``txn`` (a write transaction)."""
    dbs = backend.state_dbs()
    for db in dbs.values():
        txn.drop(db, delete=False)
    with txn.cursor(db=backend.meta) as cursor:
        stale = [key for key, _ in cursor if key not in _LOCAL_META]
    for key in stale:
        txn.delete(key, db=backend.meta)
    with open(path, "rb") as stream:
        while True:
            head = stream.read(_NAME.size)
            if not head:
                break
            if len(head) != _NAME.size:
                raise ValueError("truncated snapshot data")
            name = _read_exact(stream, _NAME.unpack(head)[0])
            key = _read_exact(stream, _LEN.unpack(_read_exact(stream, _LEN.size))[0])
            value = _read_exact(stream, _LEN.unpack(_read_exact(stream, _LEN.size))[0])
            if name == DB_META:
                if key not in _LOCAL_META:
                    txn.put(key, value, db=backend.meta)
                continue
            db = dbs.get(name)
            if db is None:
                raise ValueError(f"snapshot holds an unknown database {name!r}")
            txn.put(key, value, db=db)
