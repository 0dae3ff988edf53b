"""TLS: server verification with a CA, and client-certificate authentication (real etcd)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import coord
from coord.errors import EtcdError
from coord.testing import ServerProcess, free_port, start_etcd
from tests.conftest import require_etcd


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_pki(d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=coord-test-ca", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)  # fmt: skip


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    require_etcd()
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    server = start_etcd(
        tmp_path / "etcd",
        client_port=port,
        extra_args=[
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--cert-file", str(pki / "server.pem"), "--key-file", str(pki / "server.key"),
            "--trusted-ca-file", str(pki / "ca.pem"), "--client-cert-auth",
        ],
    )  # fmt: skip
    try:
        yield server, pki
    finally:
        server.stop()


def test_tls_with_client_certificate(tls_etcd: tuple[ServerProcess, Path]) -> None:
    server, pki = tls_etcd
    with coord.connect(
        server.endpoint, ca_cert=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key", timeout=5
    ) as client:
        client.put("tls", "ok")
        assert client.get("tls").value == b"ok"


def test_tls_without_client_certificate_is_refused(tls_etcd: tuple[ServerProcess, Path]) -> None:
    server, pki = tls_etcd
    with coord.connect(server.endpoint, ca_cert=pki / "ca.pem", timeout=2) as client, pytest.raises(EtcdError):
        client.get("tls")
