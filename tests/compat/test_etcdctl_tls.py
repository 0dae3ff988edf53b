"""Real etcdctl with TLS flags against coord-server and against real etcd 3.4 started with the same certificates.

Each test starts both servers with the same flags and certificates (a CA generated in the test), runs the same
etcdctl commands against each, and compares exit code, stdout and etcdctl's ``Error:`` line:

* ``--cacert/--cert/--key``: put and get work;
* with ``--client-cert-auth``: no client certificate, a client certificate from another CA, a server checked against
  another CA, and plaintext are all refused (etcdctl: ``context deadline exceeded``);
* with ``--client-cert-auth`` and auth enabled, a certificate's common name is the user: CN=root administers, CN=alice
  reads and writes inside her role only (``permission denied`` outside), a CN naming no user is refused, and a token
  (``--user``) wins over the certificate;
* ``--auto-tls``: serves TLS with a self-signed certificate in ``<data-dir>/fixtures/client`` (``etcdctl
  --insecure-skip-tls-verify`` works, a CA check fails), and, as in etcd, drops ``--client-cert-auth``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from coord.testing import CertificateAuthority, ServerProcess, TLSFiles, free_port, start_coord_server, start_etcd
from tests.compat.conftest import COMPAT_TARGET, require_target
from tests.conftest import require_etcd

KINDS = ("etcd", COMPAT_TARGET)


@dataclass(frozen=True)
class Pki:
    server: TLSFiles
    root: TLSFiles  # CN=root
    alice: TLSFiles  # CN=alice
    nobody: TLSFiles  # CN=nobody: no such user
    rogue: TLSFiles  # CN=root, from another CA


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    error: str  # etcdctl's last "Error: ..." line, or ""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CertificateAuthority(tmp_path / "pki")
    other = CertificateAuthority(tmp_path / "pki" / "other", "other-ca")
    return Pki(
        ca.issue("server"), ca.issue("root"), ca.issue("alice"), ca.issue("nobody"), other.issue("rogue", "root")
    )


def _start(
    kind: str,
    data_dir: Path,
    *,
    tls: TLSFiles | None = None,
    client_cert_auth: bool = False,
    client_port: int | None = None,
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    start = start_etcd if kind == "etcd" else start_coord_server
    return start(
        data_dir,
        name="tls",
        tls=tls,
        client_cert_auth=client_cert_auth,
        client_port=client_port,
        extra_args=extra_args,
    )


@pytest.fixture
def servers(pki: Pki, tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    """Real etcd and the server under test, both serving TLS with --client-cert-auth."""
    require_etcd()
    require_target()
    started: dict[str, ServerProcess] = {}
    try:
        for i, kind in enumerate(KINDS):
            started[f"{i}-{kind}"] = _start(kind, tmp_path / f"{kind}-{i}", tls=pki.server, client_cert_auth=True)
        yield started
    finally:
        for server in started.values():
            server.stop()


def _etcdctl_binary() -> str:
    return shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass(frozen=True)
class Call:
    """One etcdctl command line: its arguments, TLS flags and endpoint scheme."""

    args: tuple[str, ...]
    tls: tuple[str, ...] = ()
    scheme: str = "https"
    command_timeout: str = "10s"  # a refused connection shows as this deadline passing


def etcdctl(server: ServerProcess, call: Call) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    argv = [_etcdctl_binary(), f"--endpoints={call.scheme}://{server.endpoint}", "--dial-timeout=1s"]
    argv += [f"--command-timeout={call.command_timeout}", *call.tls, *call.args]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    return Outcome(proc.returncode, proc.stdout, errors[-1] if errors else "")


def _all_on_both(servers: dict[str, ServerProcess], calls: Sequence[Call]) -> list[Outcome]:
    """Run every call on both servers, concurrently; assert both answer each alike; return the answers."""
    ref, target = servers.values()
    with ThreadPoolExecutor(max_workers=2 * len(calls)) as pool:
        futures = [(pool.submit(etcdctl, ref, call), pool.submit(etcdctl, target, call)) for call in calls]
        answers = [(a.result(), b.result()) for a, b in futures]
    for call, (ref_answer, target_answer) in zip(calls, answers, strict=True):
        assert target_answer == ref_answer, call
    return [ref_answer for ref_answer, _ in answers]


def _on_both(servers: dict[str, ServerProcess], *args: str, tls: Sequence[str] = ()) -> Outcome:
    return _all_on_both(servers, [Call(args, tuple(tls))])[0]


def test_put_and_get_with_client_certificate(servers: dict[str, ServerProcess], pki: Pki) -> None:
    creds = pki.root.etcdctl_args()
    assert _on_both(servers, "put", "tls-key", "tls-value", tls=creds) == Outcome(0, "OK\n", "")
    assert _on_both(servers, "get", "tls-key", tls=creds) == Outcome(0, "tls-key\ntls-value\n", "")
    assert _on_both(servers, "del", "tls-key", tls=creds) == Outcome(0, "1\n", "")


def test_clients_without_a_trusted_certificate_are_refused(servers: dict[str, ServerProcess], pki: Pki) -> None:
    ca = str(pki.server.ca)
    refused = [
        ("--cacert", ca),  # no client certificate
        ("--cacert", ca, "--cert", str(pki.rogue.cert), "--key", str(pki.rogue.key)),  # from another CA
        ("--cacert", str(pki.rogue.ca), "--cert", str(pki.root.cert), "--key", str(pki.root.key)),  # server unknown
    ]
    calls = [Call(("get", "k"), tls, command_timeout="2s") for tls in refused]
    calls.append(Call(("get", "k"), scheme="http", command_timeout="2s"))  # plaintext
    for call, outcome in zip(calls, _all_on_both(servers, calls), strict=True):
        assert outcome.code != 0 and outcome.error == "Error: context deadline exceeded", (call, outcome)


def test_certificate_common_name_is_the_user(servers: dict[str, ServerProcess], pki: Pki) -> None:
    root, alice, nobody = pki.root.etcdctl_args(), pki.alice.etcdctl_args(), pki.nobody.etcdctl_args()
    for setup in (
        ("user", "add", "root", "--new-user-password", "rootpw"),
        ("user", "add", "alice", "--new-user-password", "alicepw"),
        ("role", "add", "app"),
        ("role", "grant-permission", "app", "readwrite", "app/", "--prefix"),
        ("user", "grant-role", "alice", "app"),
        ("put", "secret", "s"),
    ):
        assert _on_both(servers, *setup, tls=root).code == 0, setup
    enabled = _on_both(servers, "auth", "enable", tls=root)
    assert enabled.stdout == "Authentication Enabled\n", enabled

    checks: list[tuple[list[str], tuple[str, ...], int]] = [
        (root, ("put", "app/x", "1"), 0),
        (root, ("get", "secret"), 0),
        (root, ("user", "list"), 0),
        (alice, ("put", "app/y", "2"), 0),
        (alice, ("get", "app/", "--prefix"), 0),
        (alice, ("put", "secret", "mine"), 1),
        (alice, ("get", "secret"), 1),
        (alice, ("user", "list"), 1),
        (nobody, ("get", "app/x"), 1),
        (nobody, ("user", "list"), 1),
        ([*alice, "--user", "root:rootpw"], ("get", "secret"), 0),  # a token wins over the certificate
        ([*root, "--user", "alice:alicepw"], ("get", "secret"), 1),
    ]
    for tls, command, code in checks:
        outcome = _on_both(servers, *command, tls=tls)
        assert outcome.code == code, (tls, command, outcome)
    assert _on_both(servers, "get", "secret", tls=alice).error == "Error: etcdserver: permission denied"
    assert _on_both(servers, "get", "app/", "--prefix", tls=alice).stdout == "app/x\n1\napp/y\n2\n"


@pytest.fixture
def auto_tls_servers(pki: Pki, tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    """Both servers with --auto-tls on an https:// client URL, and --client-cert-auth (which auto-TLS drops)."""
    require_etcd()
    require_target()
    started: dict[str, ServerProcess] = {}
    try:
        for i, kind in enumerate(KINDS):
            port = free_port()
            url = f"https://127.0.0.1:{port}"
            args = ["--listen-client-urls", url, "--advertise-client-urls", url, "--auto-tls"]
            args += ["--client-cert-auth", "--trusted-ca-file", str(pki.server.ca)]
            started[f"{i}-{kind}"] = _start(kind, tmp_path / f"auto-{kind}-{i}", client_port=port, extra_args=args)
        yield started
    finally:
        for server in started.values():
            server.stop()


def test_auto_tls_serves_a_self_signed_certificate(auto_tls_servers: dict[str, ServerProcess], pki: Pki) -> None:
    from cryptography import x509

    insecure = ["--insecure-skip-tls-verify", "--insecure-transport=false"]
    assert _on_both(auto_tls_servers, "put", "auto", "tls", tls=insecure) == Outcome(0, "OK\n", "")
    assert _on_both(auto_tls_servers, "get", "auto", tls=insecure) == Outcome(0, "auto\ntls\n", "")
    [refused] = _all_on_both(auto_tls_servers, [Call(("get", "auto"), ("--cacert", str(pki.server.ca)), "https", "2s")])
    assert refused.code != 0 and refused.error == "Error: context deadline exceeded"
    for server in auto_tls_servers.values():
        fixtures = server.data_dir / "fixtures" / "client"
        assert (fixtures / "key.pem").stat().st_mode & 0o077 == 0
        cert = x509.load_pem_x509_certificate((fixtures / "cert.pem").read_bytes())
        alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in alt_names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert cert.issuer == cert.subject
