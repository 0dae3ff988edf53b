"""Fixtures for the recipe tests.

``backend`` is tests/client/conftest.py's fixture (imported, not copied): every test that takes it runs twice, on a
fresh real etcd and a fresh coord-server. ``server`` is the same pair of backends, started once per test module and
wiped after every test (all keys deleted, all leases revoked): a fresh etcd spends about a second electing itself
before its first write, so sharing keeps the suite fast. ``workers`` starts the multi-process scenarios of
``tests/recipes/_workers.py`` and kills whatever is still running at the end of the test, by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import coord
from coord.errors import LeaseNotFoundError
from coord.testing import start_coord_server, start_etcd
from tests.client.conftest import COORD_FEATURES, ETCD_FEATURES, Backend, backend
from tests.conftest import require_etcd

__all__ = ["Backend", "Workers", "backend", "default_client_for", "server", "workers"]

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    """Worker processes (``python -m tests.recipes._workers <scenario> ...``), each logging to its own file."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"worker-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.recipes._workers", *args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {i} (pid {p.pid}, rc {p.poll()}):\n" + (self.log_dir / f"worker-{i}.log").read_text()[-3000:]
            for i, p in enumerate(self.procs)
        )

    def wait_all(self, timeout: float) -> None:
        """Wait for every worker to exit; fail (with their logs) unless all exited with status 0 in time."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {proc.pid} still running after {timeout}s\n{self.logs()}")
        failed = [p.pid for p in self.procs if p.returncode != 0]
        assert not failed, f"workers {failed} failed\n{self.logs()}"

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process must run to die
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _start(kind: str, data_dir: Path) -> Backend:
    """Start a backend like tests/client/conftest.py's ``backend`` does (same skips, same features)."""
    if kind == "etcd":
        require_etcd()
        return Backend(kind, start_etcd(data_dir), ETCD_FEATURES)
    try:
        return Backend(kind, start_coord_server(data_dir), COORD_FEATURES)
    except RuntimeError as exc:
        if os.environ.get("COORD_REQUIRE_SERVER") == "1":
            raise
        pytest.skip(f"coord-server did not start (set COORD_REQUIRE_SERVER=1 to fail): {str(exc)[-300:]}")


@pytest.fixture(scope="module", params=["etcd", "coord"])
def _module_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    started = _start(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield started
    finally:
        started.process.stop()


@pytest.fixture
def server(_module_server: Backend) -> Iterator[Backend]:
    """A backend shared by the tests of one module, wiped after each test (every key and every lease)."""
    yield _module_server
    with coord.connect(_module_server.endpoint, timeout=10) as admin:
        for lease_id in admin.leases():
            with contextlib.suppress(LeaseNotFoundError):  # expired meanwhile
                admin.revoke(lease_id)
        admin.delete(b"\0", from_key=True)


@pytest.fixture
def default_client_for(server: Backend) -> Iterator[coord.Client]:
    """``server``'s blocking client installed as coord's default client (``coord.lock(...)`` and friends use it)."""
    client = coord.connect(server.endpoint, timeout=5)
    previous = coord.set_default_client(client)
    try:
        yield client
    finally:
        coord.set_default_client(previous)
        client.close()


@pytest.fixture
def workers(tmp_path: Path, server: Backend) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.kill_all()
