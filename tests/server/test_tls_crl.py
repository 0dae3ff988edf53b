"""etcd's ``--client-crl-file`` and ``--peer-crl-file``, against etcd 3.4 and coord-server alike.

With client-certificate auth, a client (peer) presenting a certificate whose serial number the CRL file (PEM or DER)
revokes is refused; a certificate it does not list is served. The file is re-read when it changes; one that cannot
be read refuses every certificate, and does not stop the server. etcd fails such a connection right after its
handshake; coord refuses each gRPC call (UNAVAILABLE, etcd's reason as the details) and fails the HTTP handshake.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.config import from_args
from coord.server.tls import ServerTLS
from coord.server.tls_crl import RevocationList
from coord.testing import CertificateAuthority, Cluster, ServerProcess, TLSFiles, start_coord_server, start_etcd
from tests.conftest import require_etcd
from tests.server.tls_helpers import channel_presenting, peer_members

_REFUSED = (ssl.SSLError, ConnectionError, urllib.error.URLError, http.client.HTTPException, OSError)


def _put(endpoint: str, files: TLSFiles) -> None:
    with channel_presenting(endpoint, files) as channel:
        rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"k", value=files.cert.stem.encode()), timeout=10)


def _watch(endpoint: str, files: TLSFiles) -> rpc_pb2.WatchResponse:
    """The first response of a Watch stream (bidirectional streaming) presenting ``files``."""

    def requests() -> Iterator[rpc_pb2.WatchRequest]:
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))

    with channel_presenting(endpoint, files) as channel:
        first: rpc_pb2.WatchResponse = _first(rpc_pb2_grpc.WatchStub(channel).Watch(requests(), timeout=10))
        return first


def _first(responses: Any) -> Any:
    """The first message of a gRPC response stream, which is then cancelled."""
    try:
        return next(responses)
    finally:
        responses.cancel()


def _snapshot(endpoint: str, files: TLSFiles) -> None:
    """Read a whole Maintenance.Snapshot (a response stream) presenting ``files``."""
    with channel_presenting(endpoint, files) as channel:
        for _ in rpc_pb2_grpc.MaintenanceStub(channel).Snapshot(rpc_pb2.SnapshotRequest(), timeout=10):
            pass


def _health(url: str, files: TLSFiles) -> int:
    """The HTTP status of GET <url>/health presenting ``files``; raises one of _REFUSED if the server refuses."""
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(files.cert, files.key)
    with urllib.request.urlopen(f"{url}/health", context=context, timeout=10) as response:
        status: int = response.status
        return status


def _refused(endpoint: str, files: TLSFiles, call: Callable[[str, TLSFiles], object] = _put) -> grpc.RpcError:
    """The error of ``call`` presenting ``files``, asserted to be UNAVAILABLE (what a refused connection gives)."""
    with pytest.raises(grpc.RpcError) as err:
        call(endpoint, files)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    return err.value


def _revoked_reason(files: TLSFiles) -> str:
    serial = x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number
    return f"transport: certificate serial {serial.to_bytes((serial.bit_length() + 7) // 8, 'big').hex()} revoked"


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_client_crl_refuses_revoked_certificates(kind: str, tmp_path: Path) -> None:
    if kind == "etcd":
        require_etcd()
    ca = CertificateAuthority(tmp_path / "pki")
    server_files, good, bad = ca.issue("server"), ca.issue("good"), ca.issue("bad")
    crl = tmp_path / "revoked.crl"  # does not exist yet: the server starts anyway and refuses every certificate
    start = start_etcd if kind == "etcd" else start_coord_server
    server: ServerProcess = start(
        tmp_path / kind, tls=server_files, client_cert_auth=True, extra_args=["--client-crl-file", str(crl)]
    )
    endpoint = server.endpoint
    http_url = server.url if kind == "etcd" else server.extra["http_url"]  # etcd serves HTTP on the client port
    try:
        assert server.alive()
        error = _refused(endpoint, good)
        if kind == "coord":
            assert error.details() == f"open {crl}: no such file or directory"
        with pytest.raises(_REFUSED):
            _health(http_url, good)

        # A PEM list revoking `bad`: read at the next connection (call), no restart.
        ca.write_crl([bad], crl)
        _put(endpoint, good)
        assert _watch(endpoint, good).created
        assert _health(http_url, good) == 200
        for call in (_put, _watch, _snapshot):  # unary, bidirectional and response streaming
            error = _refused(endpoint, bad, call)
            if kind == "coord":
                assert error.details() == _revoked_reason(bad), call
        with pytest.raises(_REFUSED):
            _health(http_url, bad)

        # The same file, now DER, revoking `good` instead.
        ca.write_crl([good], crl, der=True)
        _put(endpoint, bad)
        _snapshot(endpoint, bad)
        assert _health(http_url, bad) == 200
        error = _refused(endpoint, good, _watch)
        if kind == "coord":
            assert error.details() == _revoked_reason(good)
        with pytest.raises(_REFUSED):
            _health(http_url, good)
        assert server.alive()
        if kind == "etcd":
            assert "revoked" in server.log()
    finally:
        server.stop()


def test_lease_keep_alive_stream_is_checked_on_coord(tmp_path: Path) -> None:
    """Another bidirectional stream: LeaseKeepAlive from a revoked certificate ends before the servicer reads a
    request, while a certificate the list does not name keeps its lease alive."""
    ca = CertificateAuthority(tmp_path / "pki")
    server_files, good, bad = ca.issue("server"), ca.issue("good"), ca.issue("bad")
    crl = ca.write_crl([bad])
    server = start_coord_server(
        tmp_path / "coord", tls=server_files, client_cert_auth=True, extra_args=["--client-crl-file", str(crl)]
    )
    try:
        with channel_presenting(server.endpoint, good) as channel:
            lease = rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=10)

        def keep_alive(endpoint: str, files: TLSFiles) -> rpc_pb2.LeaseKeepAliveResponse:
            with channel_presenting(endpoint, files) as channel:
                requests = iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease.ID)])
                first: rpc_pb2.LeaseKeepAliveResponse = _first(
                    rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive(requests, timeout=10)
                )
                return first

        assert keep_alive(server.endpoint, good).TTL > 0
        assert _refused(server.endpoint, bad, keep_alive).details() == _revoked_reason(bad)
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_peer_crl_refuses_revoked_members(kind: str, tmp_path: Path) -> None:
    if kind == "etcd":
        require_etcd()
    ca = CertificateAuthority(tmp_path / "pki")
    member, intruder = ca.issue("member"), ca.issue("intruder")
    crl = ca.write_crl([intruder])
    with Cluster(kind, tmp_path / "cluster", 3, peer_tls=member, extra_args=["--peer-crl-file", str(crl)]) as cluster:
        leader = cluster.wait_leader(timeout=30)
        with cluster.members[0].grpc_channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"crl", value=b"served"), timeout=15)
        with cluster.members[2].grpc_channel() as ch:
            resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"crl"), timeout=15)
        assert [kv.value for kv in resp.kvs] == [b"served"]
        if kind == "coord":  # the peer port itself: the same CA, but a revoked certificate, is refused
            assert len(peer_members(leader.peer_port, member).members) == 3
            with pytest.raises(grpc.RpcError) as err:
                peer_members(leader.peer_port, intruder)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == _revoked_reason(intruder)

        # Every member's peer certificate is now revoked (a DER list this time): no member accepts another.
        for server in cluster.members:
            server.stop()
        ca.write_crl([member], crl, der=True)
        for server in cluster.members:
            server.restart()
        with cluster.members[0].grpc_channel() as ch, pytest.raises(grpc.RpcError) as err:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"crl", value=b"refused"), timeout=4)
        assert err.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), err.value
        assert any(_revoked_reason(member) in server.log() for server in cluster.members)


# -- units -------------------------------------------------------------------------------------------------------


def test_crl_flags_apply_only_where_client_certificates_are_verified(tmp_path: Path) -> None:
    """As in etcd 3.4: with --client-cert-auth, or with --trusted-ca-file alone (both make the handshake require and
    verify client certificates); with neither there is no client certificate to check."""
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server")
    crl = ca.write_crl()
    base = ["--data-dir", str(tmp_path / "d"), "--listen-client-urls", "https://127.0.0.1:2379"]
    base += ["--listen-client-http-urls", "https://127.0.0.1:2381", "--listen-peer-urls", "https://127.0.0.1:2380"]
    base += ["--client-crl-file", str(crl), "--peer-crl-file", str(crl)]
    pair_only = ["--cert-file", str(server.cert), "--key-file", str(server.key)]
    peer_pair_only = ["--peer-cert-file", str(server.cert), "--peer-key-file", str(server.key)]
    with_auth = ServerTLS.from_config(from_args([*base, *server.server_args(client_cert_auth=True), *peer_pair_only]))
    assert with_auth.client_crl is not None and with_auth.client_crl.path == crl
    assert with_auth.peer_crl is None  # no peer CA, no --peer-client-cert-auth: no peer certificate is verified
    assert len(with_auth.client_interceptors()) == 1
    trusted_ca_only = ServerTLS.from_config(from_args([*base, *server.server_args(), *server.server_args(peer=True)]))
    assert trusted_ca_only.client_crl is not None and trusted_ca_only.peer_crl is not None
    assert trusted_ca_only.client is not None and trusted_ca_only.client.verify_clients
    assert not trusted_ca_only.client_cert_auth  # the certificate is verified, but its CN is not the user
    without = ServerTLS.from_config(from_args([*base, *pair_only, *peer_pair_only]))
    assert without.client_crl is None and without.peer_crl is None and without.client_interceptors() == []
    assert without.client is not None and not without.client.verify_clients


def test_revocation_list_reads_pem_and_der_and_reports_bad_files(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    good, bad = ca.issue("good"), ca.issue("bad")

    def context(files: TLSFiles) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [files.cert.read_bytes()]}

    path = ca.write_crl([bad], tmp_path / "list.der", der=True)
    revocations = RevocationList(path)
    assert revocations.error is None
    assert revocations.refusal(context(good)) is None
    assert revocations.refusal(context(bad)) == _revoked_reason(bad)
    assert revocations.refusal({}) is None  # no certificate presented: nothing to check, as etcd
    # The chain a client sends is checked too (etcd checks every presented certificate).
    assert revocations.refusal(
        {"x509_pem_cert": [good.cert.read_bytes()], "x509_pem_cert_chain": [bad.cert.read_bytes()]}
    )

    path.write_bytes(b"not a list")
    assert revocations.error is not None and str(path) in revocations.error
    assert revocations.refusal(context(good)) == revocations.error
    ca.write_crl([good], path)  # PEM at the same path
    assert revocations.error is None
    assert revocations.refusal(context(good)) == _revoked_reason(good)
    assert revocations.refusal(context(bad)) is None
    path.unlink()
    assert revocations.refusal(context(bad)) == f"open {path}: no such file or directory"
