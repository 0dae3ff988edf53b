"""Start real server processes on free loopback ports, and stop them by PID.

Shared by coord's own tests, benchmarks and users' tests: :func:`start_coord_server` runs ``coord-server`` (as
``python -m coord.server.main``) and :func:`start_etcd` runs the etcd binary from the Debian ``etcd-server`` package.
Every process listens on 127.0.0.1 only. Callers must call :meth:`ServerProcess.stop` (or use the object as a
context manager); ``stop`` sends SIGTERM to the PID, then SIGKILL after a bounded wait.

TLS: give ``tls`` (a :class:`~coord.testing.certs.TLSFiles`, e.g. from
:class:`~coord.testing.certs.CertificateAuthority`) to serve clients over https:// URLs, and to :class:`Cluster`
``peer_tls`` for https:// peer URLs with peer client-certificate auth. Where these helpers call a TLS server
themselves (:meth:`Cluster.wait_leader`), they trust ``tls.ca`` and present the server's own pair as their client
certificate (certificates from CertificateAuthority serve both uses).
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
from typing import TYPE_CHECKING

from coord.testing.certs import TLSFiles
from coord.testing.faults import FaultProxy
from coord.testing.ports import free_port

if TYPE_CHECKING:
    import grpc

__all__ = [
    "Cluster",
    "ServerProcess",
    "etcd_binary",
    "free_port",
    "start_coord_server",
    "start_etcd",
    "wait_for_port",
]


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
    argv: list[str] = field(default_factory=list)
    tls: TLSFiles | None = None  # what it serves clients with (https:// client URLs); None: plaintext

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def grpc_channel(self) -> grpc.Channel:
        """A new blocking gRPC channel to the client port (the caller closes it): plaintext, or with ``tls`` trusting
        ``tls.ca`` and presenting the server's own pair as the client certificate."""
        import grpc

        if self.tls is None:
            return grpc.insecure_channel(self.endpoint)
        tls = self.tls
        credentials = grpc.ssl_channel_credentials(tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes())
        return grpc.secure_channel(self.endpoint, credentials)

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

    def restart(self, timeout: float = 30.0) -> None:
        """Start the same command again (same ports and data dir) after the process exited or was killed."""
        if self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is still running")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for_port(self.client_port, timeout, self.proc)
        except BaseException:
            self.stop()
            raise RuntimeError(f"{self.name} did not restart:\n{self.log()[-4000:]}") from None

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


def _spawn(
    name: str,
    argv: Sequence[str],
    data_dir: Path,
    client_port: int,
    peer_port: int,
    wait: bool = True,
    tls: TLSFiles | None = None,
) -> ServerProcess:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ServerProcess(name, proc, client_port, peer_port, data_dir, log_path, argv=list(argv), tls=tls)
    if not wait:
        return server
    try:
        wait_for_port(client_port, 30.0, proc)
    except BaseException:
        server.stop()
        raise RuntimeError(f"{name} did not start:\n{server.log()[-4000:]}") from None
    return server


def _tls_args(tls: TLSFiles | None, client_cert_auth: bool) -> tuple[str, list[str]]:
    """The client URL scheme and server flags for serving clients with ``tls``."""
    if tls is None:
        return "http", []
    return "https", tls.server_args(client_cert_auth=client_cert_auth)


def start_coord_server(
    data_dir: Path,
    *,
    client_port: int | None = None,
    peer_port: int | None = None,
    name: str = "default",
    extra_args: Sequence[str] = (),
    tls: TLSFiles | None = None,
    client_cert_auth: bool = False,
) -> ServerProcess:
    """Start a single-member coord-server on free loopback ports; returns once its client port accepts.

    With ``tls`` its gRPC and HTTP client URLs are https:// (``--cert-file``, ``--key-file``, ``--trusted-ca-file``
    from ``tls``), and ``client_cert_auth`` adds ``--client-cert-auth``.
    """
    client_port = client_port or free_port()
    peer_port = peer_port or free_port()
    http_port = free_port()
    scheme, tls_args = _tls_args(tls, client_cert_auth)
    argv = [
        sys.executable,
        "-m",
        "coord.server.main",
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        f"{scheme}://127.0.0.1:{client_port}",
        "--advertise-client-urls",
        f"{scheme}://127.0.0.1:{client_port}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--listen-client-http-urls",
        f"{scheme}://127.0.0.1:{http_port}",
        *tls_args,
        *extra_args,
    ]
    server = _spawn(f"coord-server {name}", argv, data_dir, client_port, peer_port, tls=tls)
    server.extra["http_url"] = f"{scheme}://127.0.0.1:{http_port}"
    return server


def start_etcd(
    data_dir: Path,
    *,
    client_port: int | None = None,
    peer_port: int | None = None,
    name: str = "default",
    extra_args: Sequence[str] = (),
    tls: TLSFiles | None = None,
    client_cert_auth: bool = False,
) -> ServerProcess:
    """Start a single-member real etcd (Debian ``etcd-server``) on free loopback ports; ``tls`` and
    ``client_cert_auth`` as for :func:`start_coord_server`."""
    binary = etcd_binary()
    if binary is None:
        raise RuntimeError("etcd is not installed (apt-get install etcd-server etcd-client)")
    client_port = client_port or free_port()
    peer_port = peer_port or free_port()
    scheme, tls_args = _tls_args(tls, client_cert_auth)
    argv = [
        binary,
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        f"{scheme}://127.0.0.1:{client_port}",
        "--advertise-client-urls",
        f"{scheme}://127.0.0.1:{client_port}",
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
        *tls_args,
        *extra_args,
    ]
    return _spawn(f"etcd {name}", argv, data_dir, client_port, peer_port, tls=tls)


@dataclass(frozen=True)
class _Schemes:
    client: str = "http"
    peer: str = "http"


def _coord_argv(
    name: str, data_dir: Path, client: int, peer: int, http: int, advertised_peer: int, schemes: _Schemes = _Schemes()
) -> list[str]:
    c, p = schemes.client, schemes.peer
    return [
        sys.executable, "-m", "coord.server.main", "--name", name, "--data-dir", str(data_dir),
        "--listen-client-urls", f"{c}://127.0.0.1:{client}", "--advertise-client-urls", f"{c}://127.0.0.1:{client}",
        "--listen-peer-urls", f"{p}://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"{p}://127.0.0.1:{advertised_peer}",
        "--listen-client-http-urls", f"{c}://127.0.0.1:{http}",
    ]  # fmt: skip


def _etcd_argv(
    name: str, data_dir: Path, client: int, peer: int, http: int, advertised_peer: int, schemes: _Schemes = _Schemes()
) -> list[str]:
    binary = etcd_binary()
    if binary is None:
        raise RuntimeError("etcd is not installed (apt-get install etcd-server etcd-client)")
    c, p = schemes.client, schemes.peer
    return [
        binary, "--name", name, "--data-dir", str(data_dir),
        "--listen-client-urls", f"{c}://127.0.0.1:{client}", "--advertise-client-urls", f"{c}://127.0.0.1:{client}",
        "--listen-peer-urls", f"{p}://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"{p}://127.0.0.1:{advertised_peer}",
        "--log-level", "warn", "--logger", "zap",
    ]  # fmt: skip


class Cluster:
    """Members ``m0..m{n-1}`` of a coord-server or etcd cluster on free loopback ports, started as a new cluster.

    ``kind`` is ``"coord"`` or ``"etcd"``. Every process is stopped by PID in :meth:`stop` (also on ``__exit__``).
    ``heartbeat_ms`` and ``election_ms`` are passed as --heartbeat-interval and --election-timeout.
    With ``tls`` the members serve clients on https:// URLs (``client_cert_auth`` adds --client-cert-auth); with
    ``peer_tls`` they talk to each other on https:// peer URLs with --peer-client-cert-auth (every member uses the
    same files); with ``peer_auto_tls`` on https:// peer URLs with --peer-auto-tls (each its own certificate).
    """

    def __init__(
        self,
        kind: str,
        base_dir: Path,
        size: int = 3,
        *,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        extra_args: Sequence[str] = (),
        peer_proxies: bool = False,
        tls: TLSFiles | None = None,
        client_cert_auth: bool = False,
        peer_tls: TLSFiles | None = None,
        peer_auto_tls: bool = False,
    ) -> None:
        if kind not in ("coord", "etcd"):
            raise ValueError("kind must be 'coord' or 'etcd'")
        self.kind = kind
        self.base_dir = base_dir
        self.token = f"coord-test-{free_port()}"
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        self.tls = tls
        peer_https = peer_tls is not None or peer_auto_tls
        self._schemes = _Schemes("http" if tls is None else "https", "https" if peer_https else "http")
        tls_args = [] if tls is None else tls.server_args(client_cert_auth=client_cert_auth)
        if peer_tls is not None:
            tls_args += peer_tls.server_args(client_cert_auth=True, peer=True)
        if peer_auto_tls:
            tls_args.append("--peer-auto-tls")
        self.extra_args = [*tls_args, *extra_args]
        self.members: list[ServerProcess] = []
        self.reserved: dict[str, tuple[int, int, int]] = {}
        # With peer_proxies, member i advertises a FaultProxy in front of its peer port: faulting proxies[i]
        # disturbs every message sent TO member i.
        self.proxies: list[FaultProxy] = []
        self._advertised: dict[int, int] = {}
        ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
        for _, peer, _ in ports:
            if peer_proxies:
                proxy = FaultProxy(peer)
                self.proxies.append(proxy)
                self._advertised[peer] = proxy.port
            else:
                self._advertised[peer] = peer
        initial = ",".join(f"m{i}={self._peer_url(peer)}" for i, (_, peer, _) in enumerate(ports))
        self.initial_cluster = initial
        try:
            for i, (client, peer, http) in enumerate(ports):
                self.members.append(self._spawn(f"m{i}", client, peer, http, initial, "new"))
            for member in self.members:
                wait_for_port(member.client_port, 30.0, member.proc)
        except BaseException:
            self.stop()
            raise

    def _peer_url(self, peer: int) -> str:
        return f"{self._schemes.peer}://127.0.0.1:{self._advertised.get(peer, peer)}"

    def _spawn(self, name: str, client: int, peer: int, http: int, initial: str, state: str) -> ServerProcess:
        make = _coord_argv if self.kind == "coord" else _etcd_argv
        argv = [
            *make(name, self.base_dir / name, client, peer, http, self._advertised.get(peer, peer), self._schemes),
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            *self.extra_args,
        ]  # fmt: skip
        server = _spawn(f"{self.kind} {name}", argv, self.base_dir / name, client, peer, wait=False, tls=self.tls)
        if self.kind == "coord":
            server.extra["http_url"] = f"{self._schemes.client}://127.0.0.1:{http}"
        server.extra["name"] = name
        server.extra["peer_url"] = self._peer_url(peer)
        return server

    def add_member(self, name: str, initial_cluster: str, extra_args: Sequence[str] = ()) -> ServerProcess:
        """Start a member joining this (existing) cluster, after ``member add`` announced it. Its peer URL must be
        the one :meth:`reserve` returned for ``name``."""
        client, peer, http = self.reserved.pop(name)
        saved, self.extra_args = self.extra_args, [*self.extra_args, *extra_args]
        try:
            member = self._spawn(name, client, peer, http, initial_cluster, "existing")
        finally:
            self.extra_args = saved
        self.members.append(member)
        wait_for_port(member.client_port, 30.0, member.proc)
        return member

    def reserve(self, name: str) -> str:
        """Pick ports for a member to be added as ``name``; returns its peer URL (for ``member add``)."""
        ports = (free_port(), free_port(), free_port())
        self.reserved[name] = ports
        return f"{self._schemes.peer}://127.0.0.1:{ports[1]}"

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members if m.alive()]

    def wait_leader(self, timeout: float = 30.0, exclude: ServerProcess | None = None) -> ServerProcess:
        """Wait until every live member (but ``exclude``, say a member cut off by a fault) names the same leader
        (Maintenance.Status), one of them; returns it. Raises TimeoutError after ``timeout`` seconds."""
        import grpc

        from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc

        deadline = time.monotonic() + timeout
        while True:
            by_id: dict[int, ServerProcess] = {}
            leaders: set[int] = set()
            try:
                for member in self.members:
                    if not member.alive() or member is exclude:
                        continue
                    with member.grpc_channel() as ch:
                        st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=2)
                    by_id[st.header.member_id] = member
                    leaders.add(st.leader)
            except grpc.RpcError:
                leaders = set()
            if len(leaders) == 1 and next(iter(leaders)) in by_id:
                return by_id[next(iter(leaders))]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed leader within {timeout}s")
            time.sleep(0.05)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until the members agree on a leader."""
        self.wait_leader(timeout)

    def by_endpoint(self, endpoint: str) -> ServerProcess:
        return next(m for m in self.members if m.endpoint == endpoint)

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        for proxy in self.proxies:
            proxy.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
