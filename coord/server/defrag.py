"""Defragment: give the space of deleted and compacted data back to the file system.

LMDB reuses freed pages but never shrinks its data file. Defragment writes a compacted copy of the environment (only
live pages, renumbered) and swaps it in for the data file:

1. the node's commit thread is held (``Node.writes_paused``): no write transaction runs from here to step 4, so the
   copy holds every acknowledged write and nothing is written to the old file after it was taken;
2. a worker thread writes the copy to the member's spool directory (the data file's file system; emptied when the
   member starts) and fsyncs it, then checks it: it must open as an LMDB environment and hold exactly the entries
   of every database of the original;
3. on the event loop, once no read transaction is in flight (``ReaderGate.run_exclusive``; readers on other threads
   wait meanwhile), the environment is closed, the copy renamed over the data file (atomic; the directory is
   fsynced), and the environment reopened;
4. the commit thread resumes.

A crash at any point leaves either the old data file or the complete copy in place, both holding the same data. Like
etcd's, a defragment blocks writes on the member while it runs (on a large store a leader may lose leadership).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from coord.server.node import Node
from coord.server.storage import Backend
from coord.server.storage.backend import DB_LOG, DB_META, STATE_DBS

log = logging.getLogger(__name__)

# How long the swap waits for read transactions on other threads (snapshot copies) to finish before giving up.
READERS_TIMEOUT_S = 60.0
_COPY_FILE = "defrag.mdb"


class DefragmentError(RuntimeError):
    """The defragment did not happen (the copy failed its check, or readers did not finish); the data file is
    unchanged and no data was lost."""


@dataclass(frozen=True)
class DefragmentResult:
    """File sizes before and after, in bytes."""

    size_before: int
    size_after: int


def _entry_counts(env: lmdb.Environment, dbs: dict[bytes, Any]) -> dict[bytes, int]:
    with env.begin(write=False) as txn:
        return {name: int(txn.stat(db)["entries"]) for name, db in dbs.items()}


def _copy_and_check(backend: Backend, copy: Path) -> None:
    """In a worker thread, while writes are held: write the compacted copy and check it against the original."""
    backend.compact_copy(copy)
    names = [DB_META, DB_LOG, *STATE_DBS]
    with backend.read() as txn:
        own = {DB_META: backend.meta, DB_LOG: backend.log, **backend.state_dbs()}
        expected = {name: int(txn.stat(own[name])["entries"]) for name in names}
    size = copy.stat().st_size
    env = lmdb.open(str(copy), subdir=False, readonly=True, lock=False, max_dbs=64, map_size=max(size, 1 << 20))
    try:
        got = _entry_counts(env, {name: env.open_db(name, create=False) for name in names})
    except lmdb.Error as exc:
        raise DefragmentError(f"the compacted copy does not open: {exc}") from exc
    finally:
        env.close()
    if got != expected:
        raise DefragmentError(f"the compacted copy does not match the store (entries {got} != {expected})")


async def defragment(node: Node) -> DefragmentResult:
    """Compact the member's data file in place (see the module docstring). Concurrent calls run one after the
    other (each holds the commit thread).

    Raises :class:`DefragmentError` when nothing was swapped (the store is unchanged), ``Rejected(STOPPED)`` when
    the node is stopping, OSError on a file system failure before the swap (the store is unchanged).
    """
    backend = node.backend
    # In the spool directory: on the data file's file system, and emptied when the member starts.
    copy = node.spool_dir() / _COPY_FILE
    loop = asyncio.get_running_loop()
    before = backend.size()
    async with node.writes_paused():
        copying = loop.run_in_executor(None, _copy_and_check, backend, copy)
        try:
            await asyncio.shield(copying)
        except asyncio.CancelledError:
            # Writes stay held until the copy thread is done with the store; then the copy is discarded.
            await asyncio.wait([copying])
            copy.unlink(missing_ok=True)
            raise
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
        try:
            await backend.gate.run_exclusive(lambda: backend.replace_data_file(copy), READERS_TIMEOUT_S)
        except Exception as exc:
            raise DefragmentError(f"defragment abandoned: {exc}") from exc
        finally:
            copy.unlink(missing_ok=True)
    after = backend.size()
    log.info("defragmented the backend: %d -> %d bytes", before, after)
    return DefragmentResult(before, after)
