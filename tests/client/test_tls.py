"""TLS: server verification with a CA, and client-certificate authentication, against real etcd and coord-server.

Both servers serve an https:// client URL with --client-cert-auth and certificates from a CA generated in the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import coord
from coord.errors import EtcdError
from coord.testing import CertificateAuthority, ServerProcess, TLSFiles, start_coord_server, start_etcd
from tests.conftest import require_etcd


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TLSFiles]:
    ca = CertificateAuthority(tmp_path / "pki")
    other = CertificateAuthority(tmp_path / "pki" / "other", "other-ca")
    return {"server": ca.issue("server"), "client": ca.issue("client"), "rogue": other.issue("rogue", "client")}


@pytest.fixture(params=["etcd", "coord"])
def tls_server(request: pytest.FixtureRequest, tmp_path: Path, pki: dict[str, TLSFiles]) -> Iterator[ServerProcess]:
    """A fresh single-member real etcd or coord-server serving TLS and requiring client certificates."""
    if request.param == "etcd":
        require_etcd()
        server = start_etcd(tmp_path / "etcd", tls=pki["server"], client_cert_auth=True)
    else:
        server = start_coord_server(tmp_path / "coord", tls=pki["server"], client_cert_auth=True)
    try:
        yield server
    finally:
        server.stop()


def test_tls_with_client_certificate(tls_server: ServerProcess, pki: dict[str, TLSFiles]) -> None:
    client_files = pki["client"]
    with coord.connect(
        tls_server.endpoint, ca_cert=client_files.ca, cert=client_files.cert, key=client_files.key, timeout=5
    ) as client:
        client.put("tls", "ok")
        assert client.get("tls").value == b"ok"


def test_tls_without_client_certificate_is_refused(tls_server: ServerProcess, pki: dict[str, TLSFiles]) -> None:
    with coord.connect(tls_server.endpoint, ca_cert=pki["server"].ca, timeout=1) as client, pytest.raises(EtcdError):
        client.get("tls")


def test_tls_with_the_wrong_ca_is_refused(tls_server: ServerProcess, pki: dict[str, TLSFiles]) -> None:
    client_files, rogue = pki["client"], pki["rogue"]
    for ca_cert, files in ((pki["server"].ca, rogue), (rogue.ca, client_files)):
        # A client certificate the server does not trust; a server certificate the client does not trust.
        with (
            coord.connect(tls_server.endpoint, ca_cert=ca_cert, cert=files.cert, key=files.key, timeout=1) as client,
            pytest.raises(EtcdError),
        ):
            client.get("tls")
