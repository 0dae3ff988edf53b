"""Start real server processes on free loopback ports, and stop them by PID.

Shared by coord's own tests, benchmarks and users' tests: :func:`start_coord_server` runs ``coord-server`` (as
``python -m coord.server.main``) and :func:`start_etcd` runs the etcd binary from the Debian ``etcd-server`` package.
Every process listens on 127.0.0.1 only. Callers must call :meth:`ServerProcess.stop` (or use the object as a
context manager); ``stop`` sends SIGTERM to the PID, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["ServerProcess", "etcd_binary", "free_port", "start_coord_server", "start_etcd", "wait_for_port"]

_used_ports: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port; raise if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def etcd_binary() -> str | None:
    """Path of the real etcd server binary, or None when it is not installed."""
    return shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)


@dataclass
class ServerProcess:
    """A server process started by a test. ``endpoint`` is ``127.0.0.1:<client port>``."""

    name: str
    proc: subprocess.Popen[bytes]
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID and reap: a crash, with no chance to flush anything."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL if it has not exited within ``timeout`` seconds; always reaps."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _spawn(name: str, argv: Sequence[str], data_dir: Path, client_port: int, peer_port: int) -> ServerProcess:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ServerProcess(name, proc, client_port, peer_port, data_dir, log_path)
    try:
        wait_for_port(client_port, 30.0, proc)
    except BaseException:
        server.stop()
        raise RuntimeError(f"{name} did not start:\n{server.log()[-4000:]}") from None
    return server


def start_coord_server(
    data_dir: Path,
    *,
    client_port: int | None = None,
    peer_port: int | None = None,
    name: str = "default",
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    """Start a single-member coord-server on free loopback ports; returns once its client port accepts."""
    client_port = client_port or free_port()
    peer_port = peer_port or free_port()
    http_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "coord.server.main",
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        f"http://127.0.0.1:{client_port}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{client_port}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--listen-client-http-urls",
        f"http://127.0.0.1:{http_port}",
        *extra_args,
    ]
    server = _spawn(f"coord-server {name}", argv, data_dir, client_port, peer_port)
    server.extra["http_url"] = f"http://127.0.0.1:{http_port}"
    return server


def start_etcd(
    data_dir: Path,
    *,
    client_port: int | None = None,
    peer_port: int | None = None,
    name: str = "default",
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    """Start a single-member real etcd (Debian ``etcd-server``) on free loopback ports."""
    binary = etcd_binary()
    if binary is None:
        raise RuntimeError("etcd is not installed (apt-get install etcd-server etcd-client)")
    client_port = client_port or free_port()
    peer_port = peer_port or free_port()
    argv = [
        binary,
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        f"http://127.0.0.1:{client_port}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{client_port}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--initial-cluster",
        f"{name}=http://127.0.0.1:{peer_port}",
        "--log-level",
        "warn",
        "--logger",
        "zap",
        *extra_args,
    ]
    return _spawn(f"etcd {name}", argv, data_dir, client_port, peer_port)
