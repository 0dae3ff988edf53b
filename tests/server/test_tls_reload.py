"""Certificate rotation without a restart, against etcd 3.4 and coord-server alike.

The member serves clients (gRPC, and coord's separate HTTP port) and peers over TLS from certificate files; the files
are replaced with a new pair from the same CA (another common name) while it runs. Guarantees checked:

* a new connection to each TLS port is served the new certificate (etcd re-reads the files on every handshake);
* a gRPC connection opened before the rotation keeps working, and a new one verified against the CA works;
* (coord only) a broken replacement (a key that does not match the certificate) is not served: coord keeps the last
  good pair and logs a warning, where etcd fails the handshake (also checked, as the documented difference).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import CertificateAuthority, ServerProcess, TLSFiles, start_coord_server, start_etcd
from tests.conftest import require_etcd
from tests.server.tls_helpers import channel_presenting

cryptography_x509 = pytest.importorskip("cryptography.x509")


def _served_common_name(port: int) -> str:
    """The common name of the certificate a new TLS connection to 127.0.0.1:port is served (not verified)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = cryptography_x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(cryptography_x509.oid.NameOID.COMMON_NAME)
    return str(names[0].value)


def _start(kind: str, data_dir: Path, client: TLSFiles, peer: TLSFiles) -> tuple[ServerProcess, dict[str, int]]:
    """A single member serving clients with ``client`` and peers (https:// peer URL) with ``peer``; returns it and
    the TLS ports to probe by role."""
    from coord.testing import free_port

    peer_port = free_port()
    peer_url = f"https://127.0.0.1:{peer_port}"
    args = ["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url]
    args += ["--peer-cert-file", str(peer.cert), "--peer-key-file", str(peer.key)]
    if kind == "etcd":
        server = start_etcd(data_dir, peer_port=peer_port, tls=client, extra_args=[*args, "--initial-cluster",
                                                                                  f"default={peer_url}"])  # fmt: skip
        return server, {"client": server.client_port, "peer": peer_port}
    server = start_coord_server(data_dir, peer_port=peer_port, tls=client, extra_args=args)
    http_port = int(server.extra["http_url"].rsplit(":", 1)[1])
    return server, {"client": server.client_port, "peer": peer_port, "http": http_port}


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_rotated_certificate_is_served_to_new_connections(kind: str, tmp_path: Path) -> None:
    if kind == "etcd":
        require_etcd()
    ca = CertificateAuthority(tmp_path / "pki")
    client_files, peer_files = ca.issue("client-side", "served-1"), ca.issue("peer-side", "peer-1")
    user = ca.issue("user")
    server, ports = _start(kind, tmp_path / kind, client_files, peer_files)
    try:
        before = channel_presenting(server.endpoint, user)
        try:
            kv = rpc_pb2_grpc.KVStub(before)
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v1"), timeout=15)
            expected = {role: ("peer-1" if role == "peer" else "served-1") for role in ports}
            assert {role: _served_common_name(port) for role, port in ports.items()} == expected

            ca.rotate(client_files, "served-2")
            ca.rotate(peer_files, "peer-2")
            expected = {role: ("peer-2" if role == "peer" else "served-2") for role in ports}
            assert {role: _served_common_name(port) for role, port in ports.items()} == expected

            # The connection opened before the rotation is untouched; a new one verifies the new certificate.
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v2"), timeout=15)
            with channel_presenting(server.endpoint, user) as after:
                resp = rpc_pb2_grpc.KVStub(after).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=15)
            assert [kv.value for kv in resp.kvs] == [b"v2"]

            # A broken replacement: the key of another pair with a new certificate.
            other = ca.issue("other", "served-3")
            client_files.cert.write_bytes(other.cert.read_bytes())
            if kind == "etcd":  # etcd fails the handshake until the files load again
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    _served_common_name(ports["client"])
            else:  # coord keeps serving the last good pair, and says why
                assert _served_common_name(ports["client"]) == "served-2"
                assert _served_common_name(ports["http"]) == "served-2"
                assert "cannot load the new certificate" in server.log()
            # Fixed again (the matching key arrives): served at once.
            client_files.key.write_bytes(other.key.read_bytes())
            assert _served_common_name(ports["client"]) == "served-3"
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v3"), timeout=15)
        finally:
            before.close()
    finally:
        server.stop()
