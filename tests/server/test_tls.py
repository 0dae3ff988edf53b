"""coord-server's TLS: start-up refusals worded as etcd's, the HTTPS gateway, and peer TLS in a 3-member cluster.

* flags etcd refuses (an https:// URL without certificates, half a key pair, a key that does not match, a missing
  file) stop coord-server too, with etcd's message (both binaries are run with the same flags);
* the HTTP port on an https:// URL serves /health, /version, /metrics and the JSON gateway over TLS, and with
  --client-cert-auth refuses a client without a certificate;
* a cluster with https:// peer URLs (--peer-cert-file, --peer-client-cert-auth) forms, elects and replicates, and its
  peer port refuses a caller with no certificate, one from another CA, or plaintext; with --peer-auto-tls (every member
  its own self-signed certificate) a cluster forms too;
* a member whose peer certificate comes from another CA cannot join (slow: the joiner gives up after 30 s).
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.raftpb import raft_pb2, raft_pb2_grpc
from coord.server.config import TLSFlags, from_args
from coord.server.tls import ServerTLS
from coord.testing import (
    CertificateAuthority,
    Cluster,
    ServerProcess,
    TLSFiles,
    etcd_binary,
    free_port,
    start_coord_server,
)
from tests.conftest import require_etcd


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TLSFiles]:
    ca = CertificateAuthority(tmp_path / "pki")
    other = CertificateAuthority(tmp_path / "pki" / "other", "other-ca")
    return {"server": ca.issue("server"), "client": ca.issue("client"), "rogue": other.issue("rogue", "server")}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- refusals at start-up, as etcd's ------------------------------------------------------------------------------


def _run_refused(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _start_argv(kind: str, data_dir: Path, client: str, peer: str, extra: list[str]) -> list[str]:
    common = ["--name", "a", "--data-dir", str(data_dir), "--listen-client-urls", client]
    common += ["--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
    if kind == "etcd":
        binary = etcd_binary()
        assert binary is not None
        return [binary, *common, "--initial-cluster", f"a={peer}", "--logger", "zap", *extra]
    return [sys.executable, "-m", "coord.server.main", *common, *extra]


def test_bad_tls_flags_stop_the_server_with_etcds_message(pki: dict[str, TLSFiles], tmp_path: Path) -> None:
    require_etcd()
    server = pki["server"]
    missing = tmp_path / "none.key"
    # (case, client scheme, peer scheme, flags, etcd's message with {client} the client URL and {peer} host:port)
    cases: list[tuple[str, str, str, list[str], str]] = [
        ("no-client-cert", "https", "http", [],
         "TLS key/cert (--cert-file, --key-file) must be provided for client url {client} with HTTPS scheme"),
        ("no-peer-cert", "http", "https", ["--peer-trusted-ca-file", str(server.ca)],
         "cannot listen on TLS for {peer}: KeyFile and CertFile are not presented"),
        ("half-pair", "https", "http", ["--cert-file", str(server.cert)],
         f"KeyFile and CertFile must both be present[key: , cert: {server.cert}]"),
        ("mismatch", "https", "http", ["--cert-file", str(server.cert), "--key-file", str(pki["client"].key)],
         "tls: private key does not match public key"),
        ("missing-key", "https", "http", ["--cert-file", str(server.cert), "--key-file", str(missing)],
         f"open {missing}: no such file or directory"),
    ]  # fmt: skip
    runs = []
    for name, client_scheme, peer_scheme, extra, message in cases:
        for kind in ("etcd", "coord"):
            # Fresh ports per run: etcd binds its peer port before it checks the client TLS flags.
            client_url = f"{client_scheme}://127.0.0.1:{free_port()}"
            peer_port = free_port()
            argv = _start_argv(
                kind, tmp_path / f"{kind}-{name}", client_url, f"{peer_scheme}://127.0.0.1:{peer_port}", extra
            )
            runs.append((kind, name, message.format(client=client_url, peer=f"127.0.0.1:{peer_port}"), argv))
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(_run_refused, [argv for *_, argv in runs]))
    for (kind, name, message, _), (code, output) in zip(runs, outcomes, strict=True):
        assert code != 0, (kind, name, output[-2000:])
        assert message in output, (kind, name, output[-2000:])


def test_tls_flags_take_gos_boolean_spellings() -> None:
    config = from_args(["--client-cert-auth", "--cert-file", "c.pem", "--peer-auto-tls=true", "--auto-tls=false"])
    assert config.client_tls == TLSFlags(cert_file=Path("c.pem"), client_cert_auth=True)
    assert config.peer_tls == TLSFlags(auto_tls=True)
    assert from_args(["--peer-client-cert-auth=1"]).peer_tls.client_cert_auth
    with pytest.raises(SystemExit):
        from_args(["--client-cert-auth=maybe"])


def test_auto_tls_certificate_is_generated_once_and_kept(tmp_path: Path) -> None:
    config = from_args(["--data-dir", str(tmp_path / "data"), "--auto-tls", "--peer-auto-tls", "--client-cert-auth"])
    first = ServerTLS.from_config(config)
    again = ServerTLS.from_config(config)
    assert first.client is not None and first.peer is not None and again.client is not None
    assert first.client.cert_file == tmp_path / "data" / "fixtures" / "client" / "cert.pem"
    assert first.client.key_file.stat().st_mode & 0o777 == 0o600
    assert first.client.cert != first.peer.cert
    assert again.client.cert == first.client.cert  # a restart serves the same certificate
    assert not first.client_cert_auth  # as in etcd, the generated configuration replaces --client-cert-auth


# -- the HTTP port over TLS -----------------------------------------------------------------------------------------


def _context(files: TLSFiles | None, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if files is not None:
        context.load_cert_chain(files.cert, files.key)
    return context


def _request(url: str, context: ssl.SSLContext, body: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return int(response.status), response.read()


@pytest.fixture
def tls_server(pki: dict[str, TLSFiles], tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_coord_server(tmp_path / "coord", tls=pki["server"], client_cert_auth=True)
    try:
        yield server
    finally:
        server.stop()


def test_https_gateway_health_version_and_metrics(tls_server: ServerProcess, pki: dict[str, TLSFiles]) -> None:
    base = tls_server.extra["http_url"]
    assert base.startswith("https://")
    context = _context(pki["client"], pki["server"].ca)
    status, body = _request(f"{base}/v3/kv/put", context, {"key": _b64("gw"), "value": _b64("over tls")})
    assert status == 200 and "header" in json.loads(body)
    status, body = _request(f"{base}/v3/kv/range", context, {"key": _b64("gw")})
    kvs = json.loads(body)["kvs"]
    assert status == 200 and base64.b64decode(kvs[0]["value"]) == b"over tls"
    deadline = time.monotonic() + 20
    while True:  # /health is 200 once the member knows its leader
        status, body = _request(f"{base}/health", context)
        if json.loads(body) == {"health": "true"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (status, json.loads(body)) == (200, {"health": "true"})
    assert "etcdserver" in json.loads(_request(f"{base}/version", context)[1])
    assert b"etcd_server_has_leader 1" in _request(f"{base}/metrics", context)[1]


def test_https_gateway_refuses_a_client_without_certificate(
    tls_server: ServerProcess, pki: dict[str, TLSFiles]
) -> None:
    base = tls_server.extra["http_url"]
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _request(f"{base}/version", _context(None, pki["server"].ca))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _request(f"{base}/version", _context(pki["rogue"], pki["server"].ca))
    # The server's certificate does not chain to another CA: the client refuses the server.
    with pytest.raises((ssl.SSLError, urllib.error.URLError)):
        _request(f"{base}/version", _context(pki["client"], pki["rogue"].ca))


# -- peer TLS ---------------------------------------------------------------------------------------------------------


def _put_and_read_elsewhere(cluster: Cluster) -> None:
    """Put through one member, then read it linearizably through another (so through Raft and the peer links)."""
    first, other = cluster.members[0], cluster.members[2]
    with first.grpc_channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"peer-tls", value=b"replicated"), timeout=15)
    with other.grpc_channel() as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"peer-tls"), timeout=15)
    assert [kv.value for kv in resp.kvs] == [b"replicated"]


def _peer_members(port: int, credentials: grpc.ChannelCredentials | None) -> raft_pb2.MembersResponse:
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    with channel:
        response: raft_pb2.MembersResponse = raft_pb2_grpc.PeerStub(channel).Members(
            raft_pb2.MembersRequest(), timeout=5
        )
        return response


def _credentials(files: TLSFiles | None, ca: Path) -> grpc.ChannelCredentials:
    if files is None:
        return grpc.ssl_channel_credentials(ca.read_bytes())
    return grpc.ssl_channel_credentials(ca.read_bytes(), files.key.read_bytes(), files.cert.read_bytes())


def test_cluster_with_peer_tls_forms_elects_and_replicates(pki: dict[str, TLSFiles], tmp_path: Path) -> None:
    server = pki["server"]
    with Cluster("coord", tmp_path / "cluster", 3, tls=server, client_cert_auth=True, peer_tls=server) as cluster:
        leader = cluster.wait_leader()
        _put_and_read_elsewhere(cluster)
        with leader.grpc_channel() as ch:
            members = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
        assert len(members) == 3
        assert all(url.startswith("https://") for m in members for url in [*m.peerURLs, *m.clientURLs])

        # The peer port answers a caller with a certificate from the cluster's CA, and nobody else.
        port = leader.peer_port
        assert len(_peer_members(port, _credentials(pki["client"], server.ca)).members) == 3
        for refused in (
            _credentials(None, server.ca),  # no client certificate
            _credentials(pki["rogue"], server.ca),  # a certificate from another CA
            None,  # plaintext
        ):
            with pytest.raises(grpc.RpcError) as err:
                _peer_members(port, refused)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_cluster_with_peer_auto_tls_forms_and_replicates(pki: dict[str, TLSFiles], tmp_path: Path) -> None:
    with Cluster("coord", tmp_path / "cluster", 3, peer_auto_tls=True) as cluster:
        cluster.wait_leader()
        _put_and_read_elsewhere(cluster)
        for member in cluster.members:
            fixtures = member.data_dir / "fixtures" / "peer"
            assert (fixtures / "cert.pem").is_file()
            assert (fixtures / "key.pem").stat().st_mode & 0o077 == 0
        # Each member generated its own certificate; they trust each other without a CA (etcd's InsecureSkipVerify).
        certs = {(m.data_dir / "fixtures" / "peer" / "cert.pem").read_bytes() for m in cluster.members}
        assert len(certs) == 3


@pytest.mark.slow
def test_member_with_a_peer_certificate_from_another_ca_cannot_join(pki: dict[str, TLSFiles], tmp_path: Path) -> None:
    server = pki["server"]
    with Cluster("coord", tmp_path / "cluster", 3, tls=server, client_cert_auth=True, peer_tls=server) as cluster:
        leader = cluster.wait_leader()
        peer_url = cluster.reserve("rogue")
        with leader.grpc_channel() as ch:
            rpc_pb2_grpc.ClusterStub(ch).MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[peer_url]), timeout=15)
        initial = f"{cluster.initial_cluster},rogue={peer_url}"
        rogue = pki["rogue"]
        args = ["--peer-cert-file", str(rogue.cert), "--peer-key-file", str(rogue.key)]
        with pytest.raises((RuntimeError, TimeoutError)):
            cluster.add_member("rogue", initial, extra_args=args)  # never opens its client port
        joiner = cluster.members[-1]
        assert joiner.extra["name"] == "rogue"
        assert joiner.proc.wait(timeout=90) != 0  # it gives up after its 30 s join timeout
        assert "cannot join the existing cluster" in joiner.log()
        with leader.grpc_channel() as ch:
            members = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
        assert [m.name for m in members if peer_url in m.peerURLs] == [""]  # added, never started
        _put_and_read_elsewhere(cluster)
