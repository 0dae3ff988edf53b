"""etcd's TLS options beyond certificates: ``--cipher-suites`` and ``--peer-cert-allowed-cn`` (plus
``--peer-cert-allowed-hostname``), against etcd 3.4 and coord-server alike where a client can observe them.

* an unknown cipher suite name stops the server with etcd's message and status 1;
* with ``--cipher-suites`` a TLS 1.2 client offering only an excluded suite fails the handshake, one offering a listed
  suite negotiates it (on coord's gRPC port, so gRPC applies the list, and on its HTTP port), TLS 1.3 is unaffected;
* with ``--peer-cert-allowed-cn`` a cluster whose peer certificates carry that name works; once they carry another
  name (same CA, members restarted) no member accepts another's messages, so there is no quorum and writes fail;
  coord's peer port refuses a caller with another common name (etcd's reason, UNAVAILABLE).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.config import from_args
from coord.server.tls import ServerTLS, TLSConfigError
from coord.server.tls_ciphers import CipherSuiteError, openssl_cipher_list
from coord.server.tls_identity import PeerIdentityCheck
from coord.testing import (
    CertificateAuthority,
    Cluster,
    ServerProcess,
    TLSFiles,
    etcd_binary,
    free_port,
    start_coord_server,
    start_etcd,
)
from tests.conftest import require_etcd
from tests.server.tls_helpers import peer_members

# -- --cipher-suites ----------------------------------------------------------------------------------------------


def _refused_argv(kind: str, data_dir: Path, extra: list[str]) -> list[str]:
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    common = ["--name", "a", "--data-dir", str(data_dir), "--listen-client-urls", client]
    common += ["--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
    if kind == "etcd":
        binary = etcd_binary()
        assert binary is not None
        return [binary, *common, "--initial-cluster", f"a={peer}", "--logger", "zap", *extra]
    return [sys.executable, "-m", "coord.server.main", *common, *extra]


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_unknown_cipher_suite_stops_the_server_like_etcd(kind: str, tmp_path: Path) -> None:
    if kind == "etcd":
        require_etcd()
    for value, message in (
        ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,not_a_suite", 'unexpected TLS cipher suite "not_a_suite"'),
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,", 'unexpected TLS cipher suite ""'),
    ):
        argv = _refused_argv(kind, tmp_path / f"{kind}-{len(value)}", ["--cipher-suites", value])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        output = (proc.stdout + proc.stderr).replace('\\"', '"')  # etcd logs JSON
        assert proc.returncode == 1, output[-2000:]
        assert message in output, output[-2000:]


def test_cipher_suite_names_map_to_openssl_names(tmp_path: Path) -> None:
    suites = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
    config = from_args(["--cipher-suites", suites])
    assert config.client_tls.cipher_suites == config.peer_tls.cipher_suites == tuple(suites.split(","))
    # TLS 1.3 names are accepted and change nothing; etcd's short ChaCha20 alias is the _SHA256 suite.
    assert (
        openssl_cipher_list(config.client_tls.cipher_suites)
        == "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
    )
    with pytest.raises(CipherSuiteError, match=r"only TLS 1\.3 suites"):
        openssl_cipher_list(["TLS_AES_128_GCM_SHA256"])
    with pytest.raises(CipherSuiteError, match="RC4"):
        openssl_cipher_list(["TLS_RSA_WITH_RC4_128_SHA"])
    # In this process gRPC was loaded without the list: serving would silently ignore it, so coord refuses.
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server")
    argv = ["--data-dir", str(tmp_path / "d"), "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
    argv += ["--listen-client-urls", "https://127.0.0.1:2379", *server.server_args()]
    with pytest.raises(TLSConfigError, match="GRPC_SSL_CIPHER_SUITES"):
        ServerTLS.from_config(from_args(argv))


def _handshake(port: int, user: TLSFiles, *, tls12_cipher: str | None) -> str:
    """The cipher a new TLS connection to 127.0.0.1:port negotiates: TLS 1.2 offering only ``tls12_cipher``, or
    TLS 1.3 when None. Raises ssl.SSLError / ConnectionError when the server refuses the handshake."""
    context = ssl.create_default_context(cafile=str(user.ca))
    context.load_cert_chain(user.cert, user.key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if tls12_cipher is None:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    else:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(tls12_cipher)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cipher = tls.cipher()
    assert cipher is not None
    return cipher[0]


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_cipher_suites_restrict_tls12_handshakes(kind: str, tmp_path: Path) -> None:
    if kind == "etcd":
        require_etcd()
    ca = CertificateAuthority(tmp_path / "pki")  # ECDSA keys: the ECDHE_ECDSA suites apply
    server_files, user = ca.issue("server"), ca.issue("user")
    # CHACHA20 is outside gRPC's default TLS 1.2 list: negotiating it shows the list reached gRPC.
    suites = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
    start = start_etcd if kind == "etcd" else start_coord_server
    server: ServerProcess = start(
        tmp_path / kind, tls=server_files, client_cert_auth=True, extra_args=["--cipher-suites", suites]
    )
    try:
        ports = [server.client_port]
        if kind == "coord":
            ports.append(int(server.extra["http_url"].rsplit(":", 1)[1]))
        for port in ports:
            for allowed in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
                assert _handshake(port, user, tls12_cipher=allowed) == allowed, (port, allowed)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                _handshake(port, user, tls12_cipher="ECDHE-ECDSA-AES256-GCM-SHA384")
            assert _handshake(port, user, tls12_cipher=None).startswith("TLS_")  # TLS 1.3 is not configurable
        credentials = grpc.ssl_channel_credentials(user.ca.read_bytes(), user.key.read_bytes(), user.cert.read_bytes())
        with grpc.secure_channel(server.endpoint, credentials) as channel:
            rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=15)
    finally:
        server.stop()


# -- --peer-cert-allowed-cn ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_peer_cert_allowed_cn(kind: str, tmp_path: Path) -> None:
    if kind == "etcd":
        require_etcd()
    ca = CertificateAuthority(tmp_path / "pki")
    member = ca.issue("member", "etcd.local")
    allowed = ["--peer-cert-allowed-cn", "etcd.local"]
    with Cluster(kind, tmp_path / "cluster", 3, peer_tls=member, extra_args=allowed) as cluster:
        leader = cluster.wait_leader(timeout=20)
        with cluster.members[0].grpc_channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"cn", value=b"allowed"), timeout=15)
        with cluster.members[2].grpc_channel() as ch:
            resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"cn"), timeout=15)
        assert [kv.value for kv in resp.kvs] == [b"allowed"]
        if kind == "coord":  # the peer port itself: the same CA, but another common name, is refused
            assert len(peer_members(leader.peer_port, member).members) == 3
            with pytest.raises(grpc.RpcError) as err:
                peer_members(leader.peer_port, ca.issue("intruder", "intruder"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "CommonName authentication failed"

        # Every member's peer certificate now names someone else (same CA): no member accepts another.
        for server in cluster.members:
            server.stop()
        ca.rotate(member, "intruder")
        for server in cluster.members:
            server.restart()
        with cluster.members[0].grpc_channel() as ch, pytest.raises(grpc.RpcError) as err:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"cn", value=b"refused"), timeout=4)
        assert err.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), err.value
        # etcd checks the name on both ends, so its dialer already rejects the listener's certificate; coord checks
        # the calls it receives.
        refusal = "CommonName authentication failed" if kind == "coord" else '"rejected connection"'
        assert any(refusal in server.log() for server in cluster.members)


def test_peer_identity_check_by_hostname_and_common_name() -> None:
    context = {
        "x509_common_name": [b"etcd.local"],
        "peer_dns": [b"m1.etcd.local", b"*.peers.example"],
        "peer_ip": [b"127.0.0.1"],
    }
    assert PeerIdentityCheck(allowed_cn="etcd.local").refusal(context) is None
    assert PeerIdentityCheck(allowed_cn="m1.etcd.local").refusal(context) == "CommonName authentication failed"
    for host in ("m1.etcd.local", "M1.ETCD.LOCAL.", "a.peers.example", "127.0.0.1"):
        assert PeerIdentityCheck(allowed_hostname=host).refusal(context) is None, host
    for host in ("etcd.local", "a.b.peers.example", "127.0.0.2", "peers.example"):
        refusal = PeerIdentityCheck(allowed_hostname=host).refusal(context)
        assert refusal == "HostnameAuthentication authentication failed", host
    # As in etcd 3.4, the hostname, when given, is checked instead of the common name.
    assert PeerIdentityCheck("etcd.local", "m2.etcd.local").refusal(context) is not None
    assert PeerIdentityCheck(allowed_cn="etcd.local").refusal({}) == "CommonName authentication failed"


# -- --trusted-ca-file without --client-cert-auth ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_trusted_ca_alone_requires_client_certificates(kind: str, tmp_path: Path) -> None:
    """etcd 3.4 requires and verifies client certificates whenever --trusted-ca-file is given, with or without
    --client-cert-auth: a client without one is refused in the handshake, one with a certificate of that CA works."""
    if kind == "etcd":
        require_etcd()
    ca = CertificateAuthority(tmp_path / "pki")
    files = ca.issue("server")
    start = start_etcd if kind == "etcd" else start_coord_server
    server = start(tmp_path / kind, tls=files)  # --cert-file, --key-file, --trusted-ca-file; no --client-cert-auth
    try:
        assert "--client-cert-auth" not in server.argv
        no_cert = grpc.ssl_channel_credentials(files.ca.read_bytes())
        with grpc.secure_channel(server.endpoint, no_cert) as channel, pytest.raises(grpc.RpcError) as refused:
            rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        with server.grpc_channel() as channel:  # presents a certificate of the same CA
            rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
    finally:
        server.stop()
