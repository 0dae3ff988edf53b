"""Fixtures shared by every test area: real server processes on free loopback ports, always stopped by PID."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.testing import ServerProcess, etcd_binary, start_coord_server, start_etcd


def require_etcd() -> None:
    """Skip when the real etcd is not installed, unless COORD_REQUIRE_ETCD=1 (as in CI), where that is a failure."""
    if etcd_binary() is None:
        if os.environ.get("COORD_REQUIRE_ETCD") == "1":
            pytest.fail("real etcd is required (apt-get install etcd-server etcd-client)")
        pytest.skip("real etcd is not installed (apt-get install etcd-server etcd-client)")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh single-member real etcd."""
    require_etcd()
    server = start_etcd(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def coord_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh single-member coord-server."""
    server = start_coord_server(tmp_path / "coord")
    try:
        yield server
    finally:
        server.stop()
