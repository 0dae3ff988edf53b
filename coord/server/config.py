"""coord-server's configuration: etcd's flag names, defaults and meanings."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from coord.server.tls_ciphers import CipherSuiteError, parse_cipher_suites

DEFAULT_MAX_REQUEST_BYTES = 1_572_864  # 1.5 MiB, as etcd
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024**3  # 2 GiB, as etcd
DEFAULT_MAX_TXN_OPS = 128


@dataclass(frozen=True)
class TLSFlags:
    """One side's TLS flags (etcd's --cert-file, --key-file, --trusted-ca-file, --client-cert-auth, --auto-tls, or
    their --peer-* twins); coord.server.tls turns them into credentials."""

    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False
    auto_tls: bool = False
    # --cipher-suites (Go's names, validated; the same list on both sides, as etcd's flag applies to both)
    cipher_suites: tuple[str, ...] = ()
    # --client-crl-file / --peer-crl-file: revoked client certificates (PEM or DER CRL), checked with client-cert auth
    crl_file: Path | None = None
    # peer side only: --peer-cert-allowed-cn, --peer-cert-allowed-hostname
    allowed_cn: str | None = None
    allowed_hostname: str | None = None

    def has_certs(self) -> bool:
        """A certificate or a key was given (etcd's ``!TLSInfo.Empty()``)."""
        return self.cert_file is not None or self.key_file is not None


@dataclass
class ServerConfig:
    name: str = "default"
    data_dir: Path = Path("default.coord")
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    listen_client_http_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2381"])
    listen_peer_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2380"])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2380"])
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 10_000
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    watch_progress_notify_interval_ms: int = 600_000
    # Lease checkpoints (coord.server.lease): on by default, unlike etcd 3.4 (see --lease-checkpoint-interval).
    lease_checkpoint: bool = True
    lease_checkpoint_interval_ms: int = 300_000
    log_level: str = "info"
    # Auth (coord.server.auth): token type and options, simple-token TTL in seconds, bcrypt cost of password hashes.
    auth_token: str = "simple"
    auth_token_ttl: int = 300
    bcrypt_cost: int = 10
    # TLS (coord.server.tls): client-facing (gRPC and HTTP client URLs) and peer.
    client_tls: TLSFlags = field(default_factory=TLSFlags)
    peer_tls: TLSFlags = field(default_factory=TLSFlags)

    def initial_members(self) -> dict[str, list[str]]:
        """--initial-cluster as {name: [peer urls]}; defaults to this member alone."""
        if not self.initial_cluster:
            return {self.name: list(self.initial_advertise_peer_urls)}
        members: dict[str, list[str]] = {}
        for item in self.initial_cluster.split(","):
            name, sep, url = item.strip().partition("=")
            if not sep or not name or not url:
                raise ValueError(f"--initial-cluster: expected name=url, got {item!r}")
            members.setdefault(name, []).append(url)
        return members


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL such as http://127.0.0.1:2379."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"expected a URL like http://127.0.0.1:2379, got {url!r}")
    return parts.hostname, parts.port


def _urls(value: str) -> list[str]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    for url in urls:
        host_port(url)
    return urls


def _duration_ms(value: str) -> int:
    """A Go-style duration (``10m``, ``5s``, ``500ms``; a bare number is seconds) in milliseconds."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    for suffix in ("ms", "s", "m", "h"):
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "", 1).isdigit():
            return max(1, int(float(value[: -len(suffix)]) * units[suffix]))
    if value.replace(".", "", 1).isdigit():
        return max(1, int(float(value) * 1000))
    raise argparse.ArgumentTypeError(f"expected a duration like 10m, 5s or 500ms, got {value!r}")


def _go_bool(value: str) -> bool:
    """A Go boolean flag value (``--client-cert-auth=true``): 1, t, true, 0, f, false in any of Go's spellings."""
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


def _add_tls_flags(p: argparse.ArgumentParser, peer: bool) -> None:
    prefix, side = ("--peer-", "peer") if peer else ("--", "client")
    p.add_argument(f"{prefix}cert-file", type=Path, default=None, help=f"{side} server TLS certificate (PEM)")
    p.add_argument(f"{prefix}key-file", type=Path, default=None, help=f"{side} server TLS key (PEM)")
    p.add_argument(f"{prefix}trusted-ca-file", type=Path, default=None, help=f"{side} TLS trusted CA (PEM)")
    for flag, what in (
        ("client-cert-auth", f"require {side} certificates signed by the trusted CA"),
        ("auto-tls", f"{side} TLS with a generated self-signed certificate (in <data-dir>/fixtures/{side})"),
    ):
        p.add_argument(f"{prefix}{flag}", type=_go_bool, nargs="?", const=True, default=False, help=what)
    p.add_argument(
        f"--{side}-crl-file",
        dest=f"{prefix[2:].replace('-', '_')}crl_file",
        type=Path,
        default=None,
        help=f"{side} certificate revocation list (PEM or DER); with {prefix}client-cert-auth, {side}s presenting a "
        "revoked certificate are refused",
    )


def _add_shared_tls_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cipher-suites",
        default="",
        help="comma-separated TLS 1.2 cipher suites (Go's names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) for "
        "client and peer TLS; TLS 1.3 suites are not configurable (default: the TLS library's)",
    )
    p.add_argument("--peer-cert-allowed-cn", default="", help="required common name of peers' client certificates")
    p.add_argument(
        "--peer-cert-allowed-hostname",
        default="",
        help="hostname (DNS or IP) peers' client certificates must be valid for (checked instead of the common name)",
    )


def _tls_flags(args: argparse.Namespace, peer: bool) -> TLSFlags:
    prefix = "peer_" if peer else ""
    return TLSFlags(
        cert_file=getattr(args, f"{prefix}cert_file"),
        key_file=getattr(args, f"{prefix}key_file"),
        trusted_ca_file=getattr(args, f"{prefix}trusted_ca_file"),
        client_cert_auth=getattr(args, f"{prefix}client_cert_auth"),
        auto_tls=getattr(args, f"{prefix}auto_tls"),
        crl_file=getattr(args, f"{prefix}crl_file"),
        cipher_suites=_cipher_suites(args.cipher_suites),
        allowed_cn=(args.peer_cert_allowed_cn or None) if peer else None,
        allowed_hostname=(args.peer_cert_allowed_hostname or None) if peer else None,
    )


def _cipher_suites(value: str) -> tuple[str, ...]:
    """Go's names as given; an unknown one stops the server with etcd's message and status 1 (not argparse's 2)."""
    try:
        return parse_cipher_suites(value)
    except CipherSuiteError as exc:
        raise SystemExit(f"coord-server: {exc}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coord-server",
        description="A key-value server that speaks the etcd v3 API. Flags carry etcd's names and defaults.",
    )
    d = ServerConfig()
    p.add_argument("--name", default=d.name, help="human-readable name of this member")
    p.add_argument("--data-dir", type=Path, default=None, help="data directory (default: ./<name>.coord)")
    p.add_argument("--listen-client-urls", type=_urls, default=d.listen_client_urls, help="gRPC client URLs")
    p.add_argument("--advertise-client-urls", type=_urls, default=None, help="client URLs advertised to others")
    p.add_argument(
        "--listen-client-http-urls",
        type=_urls,
        default=d.listen_client_http_urls,
        help="HTTP URLs for /health, /version (and the JSON gateway)",
    )
    p.add_argument("--listen-peer-urls", type=_urls, default=d.listen_peer_urls, help="URLs for peer traffic")
    p.add_argument("--initial-advertise-peer-urls", type=_urls, default=None, help="peer URLs advertised to others")
    p.add_argument("--initial-cluster", default="", help="name=peerURL,... of the initial members")
    p.add_argument("--initial-cluster-state", choices=["new", "existing"], default="new")
    p.add_argument("--initial-cluster-token", default=d.initial_cluster_token)
    p.add_argument("--heartbeat-interval", type=int, default=d.heartbeat_interval_ms, help="milliseconds")
    p.add_argument("--election-timeout", type=int, default=d.election_timeout_ms, help="milliseconds")
    p.add_argument("--snapshot-count", type=int, default=d.snapshot_count, help="applied entries kept in the log")
    p.add_argument("--quota-backend-bytes", type=int, default=d.quota_backend_bytes)
    p.add_argument("--max-txn-ops", type=int, default=d.max_txn_ops)
    p.add_argument("--max-request-bytes", type=int, default=d.max_request_bytes)
    p.add_argument(
        "--watch-progress-notify-interval",
        type=_duration_ms,
        default=d.watch_progress_notify_interval_ms,
        help="how often idle watchers that asked for it get a progress notification (e.g. 10m, 5s, 500ms)",
    )
    p.add_argument(
        "--experimental-watch-progress-notify-interval",
        dest="watch_progress_notify_interval",
        type=_duration_ms,
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--lease-checkpoint-interval",
        type=_duration_ms,
        default=d.lease_checkpoint_interval_ms,
        help="how often the leader records the remaining TTL of leases longer than this (e.g. 5m, 500ms), so that "
        "leader changes do not renew them",
    )
    p.add_argument(
        "--experimental-lease-checkpoint-interval",
        dest="lease_checkpoint_interval",
        type=_duration_ms,
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--experimental-enable-lease-checkpoint",
        "--enable-lease-checkpoint",
        dest="lease_checkpoint",
        type=_go_bool,
        nargs="?",
        const=True,
        default=d.lease_checkpoint,
        help="checkpoint lease remaining TTLs (default true; =false gives every lease its full TTL on a leader change)",
    )
    p.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warn", "error"])
    p.add_argument(
        "--auth-token",
        default=d.auth_token,
        help="auth token type: simple, or jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]",
    )
    p.add_argument("--auth-token-ttl", type=int, default=d.auth_token_ttl, help="simple token lifetime (seconds)")
    p.add_argument("--bcrypt-cost", type=int, default=d.bcrypt_cost, help="bcrypt cost of password hashes (4-31)")
    _add_tls_flags(p, peer=False)
    _add_tls_flags(p, peer=True)
    _add_shared_tls_flags(p)
    return p


def from_args(argv: list[str] | None = None) -> ServerConfig:
    args = parser().parse_args(argv)
    config = ServerConfig(
        name=args.name,
        data_dir=args.data_dir or Path(f"{args.name}.coord"),
        listen_client_urls=args.listen_client_urls,
        advertise_client_urls=args.advertise_client_urls or args.listen_client_urls,
        listen_client_http_urls=args.listen_client_http_urls,
        listen_peer_urls=args.listen_peer_urls,
        initial_advertise_peer_urls=args.initial_advertise_peer_urls or args.listen_peer_urls,
        initial_cluster=args.initial_cluster,
        initial_cluster_state=args.initial_cluster_state,
        initial_cluster_token=args.initial_cluster_token,
        heartbeat_interval_ms=args.heartbeat_interval,
        election_timeout_ms=args.election_timeout,
        snapshot_count=args.snapshot_count,
        quota_backend_bytes=args.quota_backend_bytes,
        max_txn_ops=args.max_txn_ops,
        max_request_bytes=args.max_request_bytes,
        watch_progress_notify_interval_ms=args.watch_progress_notify_interval,
        lease_checkpoint=args.lease_checkpoint,
        lease_checkpoint_interval_ms=args.lease_checkpoint_interval,
        log_level=args.log_level,
        auth_token=args.auth_token,
        auth_token_ttl=args.auth_token_ttl,
        bcrypt_cost=args.bcrypt_cost,
        client_tls=_tls_flags(args, peer=False),
        peer_tls=_tls_flags(args, peer=True),
    )
    if not 4 <= config.bcrypt_cost <= 31:
        raise SystemExit("coord-server: --bcrypt-cost must be between 4 and 31")
    if config.auth_token_ttl < 1:
        raise SystemExit("coord-server: --auth-token-ttl must be > 0")
    if config.max_txn_ops < 1 or config.max_request_bytes < 1 or config.quota_backend_bytes < 1:
        raise SystemExit("coord-server: --max-txn-ops, --max-request-bytes and --quota-backend-bytes must be > 0")
    return config
