"""The LMDB environment behind a member: every on-disk structure lives in it, as a named database.

One environment means one write transaction can change the log, the MVCC store and the applied index together, which
is what makes replay after a crash idempotent. Write transactions commit with LMDB's default durability (the data
pages and the meta page are fsynced before ``commit`` returns), so anything committed survives a crash of the process
or of the machine.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import lmdb

_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")

# Named databases. Their layouts are documented by the modules that own them.
DB_META = b"meta"  # small scalars: revisions, applied index, member identity
DB_LOG = b"log"  # coord.server.storage.log: index -> entry
DB_KEY_INDEX = b"key_index"  # coord.server.mvcc.store: (key, revision) -> key-value or tombstone
DB_REVISIONS = b"revisions"  # coord.server.mvcc.store: (revision, sub) -> key
DB_LEASES = b"leases"  # coord.server.lease: lease id -> granted TTL
DB_LEASE_KEYS = b"lease_keys"  # coord.server.mvcc.store: lease id + key -> empty (the keys attached to a lease)

DATA_FILE = "data.mdb"


def u64(value: int) -> bytes:
    """Big-endian 8 bytes, so byte order is numeric order."""
    return _U64.pack(value)


def from_u64(raw: bytes) -> int:
    return int(_U64.unpack(raw)[0])


def i64(value: int) -> bytes:
    return _I64.pack(value)


def from_i64(raw: bytes) -> int:
    return int(_I64.unpack(raw)[0])


class Backend:
    """The member's LMDB environment and its named databases.

    ``map_size`` bounds the file; it is reserved address space, not disk, and should exceed the backend quota.
    Write transactions must come from one thread at a time (the node's apply thread); read transactions may run on any
    thread concurrently with a writer and see the last committed state.
    """

    def __init__(self, data_dir: Path, map_size: int) -> None:
        self.path = data_dir / "member" / "db"
        self.path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(self.path),
            map_size=map_size,
            max_dbs=8,
            max_readers=1024,
            # Readers are not bound to OS threads, so asyncio code may open read txns freely.
            lock=True,
            readahead=False,
            metasync=True,
            sync=True,
        )
        self.meta = self.env.open_db(DB_META)
        self.log = self.env.open_db(DB_LOG)
        self.key_index = self.env.open_db(DB_KEY_INDEX)
        self.revisions = self.env.open_db(DB_REVISIONS)
        self.leases = self.env.open_db(DB_LEASES)
        self.lease_keys = self.env.open_db(DB_LEASE_KEYS)

    def read(self) -> Any:
        """A read-only transaction over the last committed state (use as a context manager)."""
        return self.env.begin(write=False, buffers=False)

    def write(self) -> Any:
        """A write transaction; committing it fsyncs. Only the node's apply thread may call this."""
        return self.env.begin(write=True)

    def size(self) -> int:
        """Bytes the data file takes on disk."""
        try:
            return os.path.getsize(self.path / DATA_FILE)
        except OSError:
            return 0

    def size_in_use(self) -> int:
        """Bytes of the data file that hold live pages."""
        info = self.env.info()
        stat = self.env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def close(self) -> None:
        self.env.close()
