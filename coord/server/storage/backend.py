"""The LMDB environment behind a member: every on-disk structure lives in it, as a named database.

One environment means one write transaction can change the log, the MVCC store and the applied index together, which
is what makes replay after a crash idempotent. Write transactions commit with LMDB's default durability (the data
pages and the meta page are fsynced before ``commit`` returns), so anything committed survives a crash of the process
or of the machine.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import lmdb

from coord.server.storage.readgate import ReaderGate

_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")

# Named databases. Their layouts are documented by the modules that own them.
DB_META = b"meta"  # small scalars: revisions, applied index, member identity
DB_LOG = b"log"  # coord.server.storage.log: index -> entry
DB_KEY_INDEX = b"key_index"  # coord.server.mvcc.store: (key, revision) -> key-value or tombstone
DB_REVISIONS = b"revisions"  # coord.server.mvcc.store: (revision, sub) -> key
DB_LEASES = b"leases"  # coord.server.lease: lease id -> granted TTL
DB_LEASE_KEYS = b"lease_keys"  # coord.server.mvcc.store: lease id + key -> empty (the keys attached to a lease)
DB_MEMBERS = b"members"  # coord.server.membership: member id -> member (the replicated member table)
DB_AUTH = b"auth"  # coord.server.auth.store: auth enabled flag, auth revision, enable epoch
DB_AUTH_USERS = b"auth_users"  # coord.server.auth.store: user name -> authpb.User
DB_AUTH_ROLES = b"auth_roles"  # coord.server.auth.store: role name -> authpb.Role

# The state machine: every database a snapshot copies to a follower (besides the replicated keys of ``meta``).
# A module adding replicated state in a new database must list it here.
STATE_DBS: list[bytes] = [
    DB_KEY_INDEX,
    DB_REVISIONS,
    DB_LEASES,
    DB_LEASE_KEYS,
    DB_MEMBERS,
    DB_AUTH,
    DB_AUTH_USERS,
    DB_AUTH_ROLES,
]

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
    thread concurrently with a writer and see the last committed state. Read transactions pass the reader ``gate``,
    which lets :meth:`replace_data_file` (defragment) close and reopen the environment under them safely.
    """

    def __init__(self, data_dir: Path, map_size: int) -> None:
        self.path = data_dir / "member" / "db"
        self.path.mkdir(parents=True, exist_ok=True)
        self.gate = ReaderGate()
        self._map_size = map_size
        self._open()

    def _open(self) -> None:
        self.env = lmdb.open(
            str(self.path),
            map_size=self._map_size,
            max_dbs=32,
            max_readers=1024,
            # Readers are not bound to OS threads, so asyncio code may open read txns freely.
            lock=True,
            readahead=False,
            # A commit flushes the data pages, then writes the meta page that makes them current; with metasync off
            # that last write is left to the next commit's flush (or to write(durable=True)'s explicit sync). The
            # file stays consistent whatever happens (LMDB's MDB_NOMETASYNC contract); a power loss may only undo
            # the last commit, which is why every commit that must be durable is synced explicitly.
            metasync=False,
            sync=True,
        )
        self.meta = self.env.open_db(DB_META)
        self.log = self.env.open_db(DB_LOG)
        self.key_index = self.env.open_db(DB_KEY_INDEX)
        self.revisions = self.env.open_db(DB_REVISIONS)
        self.leases = self.env.open_db(DB_LEASES)
        self.lease_keys = self.env.open_db(DB_LEASE_KEYS)
        self.members = self.env.open_db(DB_MEMBERS)
        self.auth = self.env.open_db(DB_AUTH)
        self.auth_users = self.env.open_db(DB_AUTH_USERS)
        self.auth_roles = self.env.open_db(DB_AUTH_ROLES)

        self._state_dbs = {name: self.env.open_db(name) for name in STATE_DBS}

    def state_dbs(self) -> dict[bytes, Any]:
        """The state machine databases by name (see ``STATE_DBS``)."""
        return self._state_dbs

    def read(self) -> _GatedRead:
        """A read-only transaction over the last committed state: ``with backend.read() as txn``.

        On the event loop the block must not await (see ``coord.server.storage.readgate``).
        """
        return _GatedRead(self)

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[Any]:
        """A write transaction, committed when the block exits normally (aborted when it raises). Only the node's
        commit thread may call this.

        ``durable``: the commit is on disk when the block returns (two flushes: the data, then the meta page). With
        False, one flush: a power loss may undo this commit, and only this one (the next commit's flush makes it
        durable); for changes that can be redone, such as applying entries that are already durable in the log.
        """
        with self.env.begin(write=True) as txn:
            yield txn
        if durable:
            self.env.sync(True)

    def size(self) -> int:
        """Bytes the data file takes on disk."""
        try:
            return os.path.getsize(self.path / DATA_FILE)
        except OSError:
            return 0

    def size_in_use(self) -> int:
        """Bytes of live state-machine pages: every state database's branch, leaf and overflow pages. Unlike the file
        size this shrinks when data is deleted and compacted away (LMDB reuses the freed pages), which is what the
        quota measures."""
        stat = self.env.stat()
        pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        with self.read() as txn:
            # The Raft log is left out, as etcd's quota leaves out its WAL: compaction every --snapshot-count entries
            # bounds it, and counting it would keep a deleted-and-compacted store over quota.
            for db in {self.meta, *self._state_dbs.values()}:
                s = txn.stat(db)
                pages += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
        return int(pages * stat["psize"])

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()

    # -- defragment (coord.server.defrag drives these) ---------------------------------------------------------------

    def compact_copy(self, target: Path) -> None:
        """Write a compacted copy of the environment (free pages left out, pages renumbered) to the file ``target``
        (on the data file's file system, for :meth:`replace_data_file`) and fsync it. Any thread; the copy is one
        consistent state."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with self.gate.reading():
                self.env.copyfd(fd, compact=True)
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace_data_file(self, copy: Path) -> None:
        """Close the environment, move ``copy`` (a :meth:`compact_copy` taken while no write ran since) over the
        data file, make the rename durable, and reopen. The caller guarantees that no write transaction runs and
        that no read transaction is in flight (``gate.run_exclusive``)."""
        self.env.close()
        try:
            os.replace(copy, self.path / DATA_FILE)
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            self._open()  # the copy, or the old data file if the rename failed


class _GatedRead:
    """Context manager of :meth:`Backend.read`: passes the reader gate, then opens a read-only transaction."""

    __slots__ = ("_backend", "_txn")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._txn: Any = None

    def __enter__(self) -> Any:
        gate = self._backend.gate
        gate.enter()
        try:
            self._txn = self._backend.env.begin(write=False, buffers=False)
        except BaseException:
            gate.leave()
            raise
        return self._txn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._txn.abort()
        finally:
            self._backend.gate.leave()
