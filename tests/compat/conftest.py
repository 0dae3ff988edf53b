"""Fixtures for the etcd compatibility suite: a fresh real etcd (the oracle) beside a fresh server under test.

The server under test is coord-server by default. ``COORD_COMPAT_TARGET=etcd`` swaps in a second real etcd instead,
which validates the harness itself: every test here must pass etcd-vs-etcd. While ``coord.server.main`` does not
exist yet, the coord-targeted tests are skipped (not failed) so the tree stays green.

Data directories live under /dev/shm when it is writable (etcd fsyncs every write; tmpfs keeps the differential runs
fast) and are removed after each test. Every server listens on a free 127.0.0.1 port and is stopped by PID.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.testing import ServerProcess, start_coord_server, start_etcd
from tests.conftest import require_etcd

#: "coord" (default) or "etcd" (harness self-check: the second side is a real etcd too).
COMPAT_TARGET = os.environ.get("COORD_COMPAT_TARGET", "coord").strip().lower()

#: Both sides get the same member name, so names only need normalising when they differ by design.
MEMBER_NAME = "compat"


def _fast_base_dir(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="coord-compat-", dir=shm))
    return tmp_path


def require_target() -> None:
    """Skip coord-targeted tests while coord-server has no entry point yet."""
    if COMPAT_TARGET == "etcd":
        require_etcd()
        return
    if COMPAT_TARGET != "coord":
        pytest.fail(f"COORD_COMPAT_TARGET must be 'coord' or 'etcd', not {COMPAT_TARGET!r}")
    if importlib.util.find_spec("coord.server.main") is None:
        pytest.skip("coord-server (coord.server.main) is not implemented yet")


def start_target(data_dir: Path, extra_args: tuple[str, ...] = ()) -> ServerProcess:
    """Start the server under test (coord-server, or a second etcd when COORD_COMPAT_TARGET=etcd)."""
    if COMPAT_TARGET == "etcd":
        return start_etcd(data_dir, name=MEMBER_NAME, extra_args=extra_args)
    return start_coord_server(data_dir, name=MEMBER_NAME, extra_args=extra_args)


@contextlib.contextmanager
def started_pair(base: Path, extra_args: tuple[str, ...] = ()) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A fresh real etcd (the oracle) and a fresh server under test, both started with ``extra_args`` in
    directories under ``base``; both stopped by PID on exit."""
    require_etcd()
    require_target()
    ref = start_etcd(base / "ref-etcd", name=MEMBER_NAME, extra_args=extra_args)
    try:
        target = start_target(base / "target", extra_args)
        try:
            yield ref, target
        finally:
            target.stop()
    finally:
        ref.stop()


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on tmpfs when possible; removed afterwards."""
    base = _fast_base_dir(tmp_path)
    try:
        yield base
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ref_server(fast_dir: Path) -> Iterator[ServerProcess]:
    """A fresh single-member real etcd: the oracle."""
    require_etcd()
    server = start_etcd(fast_dir / "ref-etcd", name=MEMBER_NAME)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def target_server(fast_dir: Path) -> Iterator[ServerProcess]:
    """A fresh single-member server under test (coord-server unless COORD_COMPAT_TARGET=etcd)."""
    require_etcd()
    require_target()
    server = start_target(fast_dir / f"target-{COMPAT_TARGET}")
    try:
        yield server
    finally:
        server.stop()
