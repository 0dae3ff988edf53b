"""The coord snapshot file: what ``etcdctl snapshot save`` (Maintenance.Snapshot) writes and ``coord-server snapshot
restore`` reads.

Layout, in order:

1. one ASCII header line: ``coord-snapshot/<format version> revision=<r> compact-revision=<c> applied-index=<a>
   cluster-id=<hex> member-id=<hex>`` and a newline (unknown ``key=value`` words are ignored by readers, so later
   versions may add some);
2. the state machine, as the records of ``coord.server.peer.snapshot`` (the format a leader sends a follower);
3. zero bytes of padding, then the length of the records as 8 bytes big-endian: the padding makes the size of the
   file without its checksum a multiple of 512, the shape of etcd's files (a database of whole pages), which
   ``etcdctl snapshot save`` checks (it refuses a stream whose size is not 32 more than a multiple of 512);
4. 32 bytes: the sha256 of everything before them.

Like etcd's stream (the database, then its sha256), the file carries its own checksum, so a copy damaged on the way
or on disk is refused instead of restored. The records come from one LMDB read transaction, so the file is one
consistent state: the one after applying index ``applied-index``, at store revision ``revision``.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from coord.errors import CoordError
from coord.server.applier import META_APPLIED
from coord.server.membership import META_CLUSTER_ID, META_MEMBER_ID
from coord.server.mvcc import MvccReader
from coord.server.peer.snapshot import state_chunks
from coord.server.storage import Backend, from_u64

MAGIC = b"coord-snapshot/"
FORMAT_VERSION = 1
DIGEST_BYTES = hashlib.sha256().digest_size
_MAX_HEADER_BYTES = 4096
_ALIGN = 512
_LENGTH = struct.Struct(">Q")
_COPY_BYTES = 1 << 20
# bbolt (etcd) files start with a page header, then the meta magic 0xED0CDAED, little-endian.
_BBOLT_MAGIC = b"\xed\xda\x0c\xed"
_WORD = re.compile(r"([a-z][a-z0-9-]*)=([0-9a-fA-F]+)")


class SnapshotFileError(CoordError):
    """The file is not a coord snapshot, is of an unsupported format version, or is damaged (checksum mismatch,
    truncated). The message says which, and names the file."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot file's header says, and its size in bytes."""

    format_version: int
    revision: int
    compact_revision: int
    applied_index: int
    cluster_id: int
    member_id: int
    size: int = 0

    def header_line(self) -> bytes:
        return (
            f"{MAGIC.decode()}{self.format_version} revision={self.revision} "
            f"compact-revision={self.compact_revision} applied-index={self.applied_index} "
            f"cluster-id={self.cluster_id:x} member-id={self.member_id:x}\n"
        ).encode()


def write_snapshot(backend: Backend, directory: Path) -> tuple[Path, SnapshotInfo]:
    """Write the state machine to a new snapshot file in ``directory`` (one read transaction); returns its path and
    header. Blocking: run it in a worker thread. The caller removes the file."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="save-", suffix=".snapshot", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, backend.read() as txn:
            view = MvccReader(backend, txn)
            applied = txn.get(META_APPLIED, db=backend.meta)
            cluster = txn.get(META_CLUSTER_ID, db=backend.meta)
            member = txn.get(META_MEMBER_ID, db=backend.meta)
            info = SnapshotInfo(
                format_version=FORMAT_VERSION,
                revision=view.current_revision,
                compact_revision=max(view.compact_revision, 0),
                applied_index=from_u64(applied) if applied else 0,
                cluster_id=from_u64(cluster) if cluster else 0,
                member_id=from_u64(member) if member else 0,
            )
            digest = hashlib.sha256()
            header = info.header_line()
            digest.update(header)
            out.write(header)
            records = 0
            for chunk in state_chunks(backend, txn):
                digest.update(chunk)
                out.write(chunk)
                records += len(chunk)
            unaligned = len(header) + records + _LENGTH.size
            tail = bytes(-unaligned % _ALIGN) + _LENGTH.pack(records)
            digest.update(tail)
            out.write(tail)
            out.write(digest.digest())
            size = out.tell()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, replace(info, size=size)


def _parse_header(path: Path, line: bytes) -> SnapshotInfo:
    if not line.startswith(MAGIC):
        hint = ""
        if len(line) >= 20 and line[16:20] == _BBOLT_MAGIC:
            hint = " (it looks like an etcd snapshot: restore it with etcdctl snapshot restore)"
        raise SnapshotFileError(f"{path}: not a coord snapshot file{hint}")
    if not line.endswith(b"\n"):
        raise SnapshotFileError(f"{path}: damaged snapshot file (no header line)")
    head, _, rest = line[len(MAGIC) :].strip().decode("ascii", "replace").partition(" ")
    if not head.isdigit():
        raise SnapshotFileError(f"{path}: damaged snapshot file (bad format version {head!r})")
    if int(head) != FORMAT_VERSION:
        raise SnapshotFileError(
            f"{path}: snapshot format version {head} is not supported (this coord-server reads version "
            f"{FORMAT_VERSION})"
        )
    words = dict(_WORD.findall(rest))
    try:
        return SnapshotInfo(
            format_version=FORMAT_VERSION,
            revision=int(words["revision"]),
            compact_revision=int(words["compact-revision"]),
            applied_index=int(words["applied-index"]),
            cluster_id=int(words["cluster-id"], 16),
            member_id=int(words["member-id"], 16),
        )
    except (KeyError, ValueError):
        raise SnapshotFileError(f"{path}: damaged snapshot file (incomplete header)") from None


def read_snapshot(path: Path, records_out: BinaryIO | None = None) -> SnapshotInfo:
    """Check the snapshot file at ``path`` (header, then the sha256 over the whole file) and return its header.

    With ``records_out`` the state machine records are copied there as they are read; they are only usable when
    this returns (on an error they are incomplete or damaged). Raises :class:`SnapshotFileError` when the file is
    not a coord snapshot, of another format version, truncated or damaged; OSError when it cannot be read.
    """
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        line = stream.readline(_MAX_HEADER_BYTES)
        info = _parse_header(path, line)
        body = size - len(line) - _LENGTH.size - DIGEST_BYTES
        if body < 0:
            raise SnapshotFileError(f"{path}: damaged snapshot file (truncated: {size} bytes)")
        stream.seek(size - DIGEST_BYTES - _LENGTH.size)
        (records,) = _LENGTH.unpack(stream.read(_LENGTH.size))
        if not 0 <= body - records < _ALIGN:
            raise SnapshotFileError(f"{path}: damaged snapshot file (bad records length {records})")
        stream.seek(len(line))
        digest.update(line)
        left = records
        while left:
            data = stream.read(min(_COPY_BYTES, left))
            if not data:
                raise SnapshotFileError(f"{path}: damaged snapshot file (truncated)")
            digest.update(data)
            if records_out is not None:
                records_out.write(data)
            left -= len(data)
        digest.update(stream.read(body - records + _LENGTH.size))
        trailer = stream.read(DIGEST_BYTES)
    if trailer != digest.digest():
        raise SnapshotFileError(f"{path}: damaged snapshot file (sha256 mismatch: the file was altered or truncated)")
    return replace(info, size=size)
