"""The python-etcd3 client (PyPI ``etcd3`` 0.12) works against the server under test as against real etcd.

python-etcd3 0.12 ships protobuf code generated for protobuf 3 and registers etcd's descriptors itself, which clashes
with coord's own (and with protobuf >= 4). So it runs in its own virtualenv, created once in a cache directory
(``$COORD_ETCD3_VENV``, default ``~/.cache/coord-test/etcd3-venv``, reused when present) with
``pip install etcd3==0.12.0 'protobuf<4' grpcio``, and ``etcd3_client_script.py`` runs there as a subprocess.
Its JSON output from etcd and from the server under test must be equal (after replacing ports), and is also checked
against the values it must have.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coord.testing import ServerProcess
from tests.compat.conftest import COMPAT_TARGET

SCRIPT = Path(__file__).with_name("etcd3_client_script.py")
REQUIREMENTS = ("etcd3==0.12.0", "protobuf<4", "grpcio")
VENV_TIMEOUT_S = 300


def _venv_dir() -> Path:
    env = os.environ.get("COORD_ETCD3_VENV")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "coord-test" / "etcd3-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def etcd3_python() -> Iterator[Path]:
    """The interpreter of a virtualenv with python-etcd3 installed; created on first use, then reused."""
    venv = _venv_dir()
    stamp = venv / ".coord-ready"
    wanted = " ".join(REQUIREMENTS)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == wanted):
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
            proc = subprocess.run(
                [
                    str(_venv_python(venv)),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *REQUIREMENTS,
                ],
                capture_output=True,
                text=True,
                timeout=VENV_TIMEOUT_S,
                check=False,
            )
            if proc.returncode != 0:
                pytest.fail(f"could not install {wanted} into {venv}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            stamp.write_text(wanted)
            print(f"created {venv} in {time.monotonic() - started:.1f}s")
    yield _venv_python(venv)


def run_client(python: Path, server: ServerProcess) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION")}
    proc = subprocess.run(
        [str(python), str(SCRIPT), "127.0.0.1", str(server.client_port)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"python-etcd3 script failed against {server.name}:\n{proc.stderr[-5000:]}"
    text = proc.stdout.replace(str(server.client_port), "<client-port>").replace(str(server.peer_port), "<peer-port>")
    result: dict[str, Any] = json.loads(text)
    return result


def _meta(key: str, create: int, mod: int, version: int) -> dict[str, Any]:
    return {"key": key, "create": create, "mod": mod, "version": version, "lease": 0}


def check_expected(out: dict[str, Any]) -> None:
    """The values python-etcd3 must report on a fresh server (revisions start at 1)."""
    assert out["put"] == [2, 3, 4]
    assert out["put_prev_kv"] == [5, "1", 1]
    assert out["get"] == ["1b", _meta("/t/a", 2, 5, 2)]
    assert out["get_missing"] == [None, None]
    assert [kv[0] for kv in out["get_prefix"]] == ["1b", "2", "3"]
    assert [kv[0] for kv in out["get_prefix_sorted"]] == ["3", "2", "1b"]
    assert out["get_range"] == out["get_prefix"][:2]
    assert out["replace_ok"] is True and out["replace_fail"] is False
    assert out["txn_success"] == [True, [["33", _meta("/t/c", 4, 6, 2)]], 7, 1]
    assert out["txn_failure"] == [False, [["1b", _meta("/t/a", 2, 5, 2)]], 8]
    assert out["txn_duplicate"]["details"] == "etcdserver: duplicate key given in txn request"
    assert out["delete"] is True and out["delete_missing"] is False
    assert out["delete_prefix"] == 3
    assert out["get_after"] == []
    assert out["members"] == [["compat", ["http://127.0.0.1:<peer-port>"], ["http://127.0.0.1:<client-port>"]]]
    assert out["status"] == {"db_size_positive": True, "leader_is_member": True}


def test_python_etcd3_against_etcd(etcd3_python: Path, ref_server: ServerProcess) -> None:
    """Harness check: the expectations hold against real etcd."""
    check_expected(run_client(etcd3_python, ref_server))


def test_python_etcd3_against_target(
    etcd3_python: Path, ref_server: ServerProcess, target_server: ServerProcess
) -> None:
    ref = run_client(etcd3_python, ref_server)
    got = run_client(etcd3_python, target_server)
    diffs = {
        k: {"etcd": ref.get(k), COMPAT_TARGET: got.get(k)}
        for k in sorted(set(ref) | set(got))
        if ref.get(k) != got.get(k)
    }
    assert not diffs, "python-etcd3 results differ:\n" + json.dumps(diffs, indent=1, sort_keys=True)
    check_expected(got)
