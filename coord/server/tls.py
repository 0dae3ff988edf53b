"""TLS for coord-server, with etcd 3.4's flags and behaviour, for the client-facing side and the peer side.

Flags (each has a ``--peer-`` twin): ``--cert-file`` and ``--key-file`` (the server certificate, PEM),
``--trusted-ca-file`` (the CA that client certificates must chain to), ``--client-cert-auth`` (require a verified
client certificate), ``--auto-tls`` (serve with a self-signed certificate generated into
``<data-dir>/fixtures/client`` or ``.../peer``, reused on restarts).

What follows etcd exactly:

* the URL scheme decides: an ``https://`` listen URL gets a TLS listener, an ``http://`` one stays plaintext (with a
  warning when certificates were given); an ``https://`` URL without certificates stops the server with etcd's
  message (``TLS key/cert (--cert-file, --key-file) must be provided for client url ... with HTTPS scheme``, or for
  peers ``cannot listen on TLS for <host:port>: KeyFile and CertFile are not presented``);
* a certificate without its key (or the reverse), an unreadable file or a key that does not match its certificate
  stops the server with Go's wording;
* ``--auto-tls`` is ignored when certificates are given; when it applies, the generated certificate replaces the
  whole TLS configuration, so ``--client-cert-auth`` and ``--trusted-ca-file`` no longer apply (as in etcd);
* client certificates are required and verified (etcd's ``tls.RequireAndVerifyClientCert``) with
  ``--client-cert-auth`` and, as in etcd 3.4, whenever ``--trusted-ca-file`` is given; without a trusted CA file they
  are verified against the system CAs. Only ``--client-cert-auth`` makes the certificate's common name the user;
* a member dialing a peer's ``https://`` URL presents its peer certificate and verifies the peer's against
  ``--peer-trusted-ca-file`` (the system CAs without one); with ``--peer-auto-tls`` it does not verify the peer
  (etcd's ``InsecureSkipVerify``): :class:`PeerDialer` pins whatever certificate the peer presents;
* certificates are re-read from their files for new handshakes (listeners) and new peer channels, so they can be
  rotated without a restart (:mod:`coord.server.tls_reload`, which keeps the last good pair when new files do not
  load, where etcd fails the handshake);
* ``--cipher-suites`` restricts TLS 1.2 on every listener and peer channel (:mod:`coord.server.tls_ciphers`);
* ``--peer-cert-allowed-cn`` / ``--peer-cert-allowed-hostname`` refuse peers whose verified certificate does not
  match (:mod:`coord.server.tls_identity`; checked per call, not in the handshake);
* ``--client-crl-file`` / ``--peer-crl-file`` refuse clients (peers) presenting a revoked certificate where
  certificates are verified (:mod:`coord.server.tls_crl`; per call on the gRPC ports, in the HTTP handshake).

One difference: etcd's generated keys are ECDSA P-521; coord's are P-256, because gRPC's TLS library does not sign
TLS 1.3 handshakes with P-521 keys.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from coord.server.config import ServerConfig, TLSFlags, host_port
from coord.server.tls_ciphers import CipherSuiteError, check_grpc_cipher_env, openssl_cipher_list
from coord.server.tls_crl import CertificateCheck, CertificateGuard, RevocationList
from coord.server.tls_identity import PeerIdentityCheck
from coord.server.tls_reload import ReloadingKeyPair

log = logging.getLogger(__name__)

__all__ = ["PeerDialer", "ServerTLS", "TLSConfigError", "TLSMaterial", "self_signed_certificate"]

_SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)
_PIN_TIMEOUT_S = 3.0
# Where Debian, Alpine and RHEL keep the system CA bundle, when Python's default paths name none that exists.
_SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


class TLSConfigError(Exception):
    """The TLS flags cannot be served; the message is etcd's where etcd has one."""


@dataclass(frozen=True)
class TLSMaterial:
    """One side's loaded TLS configuration: certificate and key (PEM bytes and paths, as loaded at start-up), the CA
    that verifies client certificates (None: none requested, or the system CAs), whether client certificates are
    required, the TLS 1.2 cipher suites (an OpenSSL cipher string; empty: the library's defaults) and the revoked
    client certificates (``crl``: only where client certificates are verified; the HTTP listener's handshakes check it).

    Listeners and peer channels made from it serve the files' current pair (``key_pair``), re-read when the files
    change. Constructing it loads the pair and raises ``OSError``/``ssl.SSLError`` if it does not load."""

    cert_file: Path
    key_file: Path
    cert: bytes
    key: bytes
    trusted_ca: bytes | None
    client_cert_auth: bool
    self_signed: bool = False  # generated by --auto-tls: peers dialed with it are not verified
    ciphers: str = ""
    side: str = "client"
    crl: RevocationList | None = field(default=None, compare=False)
    # Whether the handshake requires and verifies a client certificate: with client-cert auth, and (as etcd 3.4
    # does) whenever a trusted CA file is given. ``client_cert_auth`` alone decides whether its CN is the user.
    verify_clients: bool = False
    key_pair: ReloadingKeyPair = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        watched = (self.crl.path,) if self.crl is not None else ()
        pair = ReloadingKeyPair(self.cert_file, self.key_file, self._ssl_context, self.side, watched=watched)
        object.__setattr__(self, "key_pair", pair)

    def server_credentials(self) -> grpc.ServerCredentials:
        """gRPC credentials for a TLS listener, serving the current pair to each new connection; requires client
        certificates with client-cert auth."""
        return self.key_pair.grpc_server_credentials(self.trusted_ca, require_client_auth=self.verify_clients)

    def server_ssl_context(self) -> ssl.SSLContext:
        """An ``ssl`` server context (the HTTP endpoints) with the same policy as :meth:`server_credentials`,
        serving the current pair to each new connection."""
        return self.key_pair.ssl_server_context()

    def _ssl_context(self, cert_file: Path, key_file: Path) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ciphers:
            context.set_ciphers(self.ciphers)
        context.load_cert_chain(cert_file, key_file)
        if self.verify_clients:
            context.verify_mode = ssl.CERT_REQUIRED
            assert self.trusted_ca is not None  # _material always resolves a CA when clients are verified
            context.load_verify_locations(cadata=self.trusted_ca.decode())
            if self.crl is not None:
                self.crl.restrict(context)
        return context

    def channel_credentials(self, root_certificates: bytes | None = None) -> grpc.ChannelCredentials:
        """gRPC credentials to dial a peer: the current certificate as the client certificate, verifying the peer
        against ``root_certificates`` (default: the trusted CA, else gRPC's bundled roots)."""
        roots = root_certificates if root_certificates is not None else self.trusted_ca
        pair = self.key_pair.current()
        return grpc.ssl_channel_credentials(roots, pair.key, pair.cert)


@dataclass(frozen=True)
class ServerTLS:
    """A member's TLS: client-facing (gRPC and HTTP client URLs) and peer, each None when not configured.

    Usage::

        tls = ServerTLS.from_config(config)          # raises TLSConfigError (etcd's messages)
        tls.add_client_port(grpc_server, "https://127.0.0.1:2379")
        ssl_context = tls.http_ssl_context("https://127.0.0.1:2381")
    """

    client: TLSMaterial | None
    peer: TLSMaterial | None
    peer_identity: PeerIdentityCheck | None = None  # which peers' client certificates are allowed; None: any valid

    @classmethod
    def from_config(cls, config: ServerConfig) -> ServerTLS:
        """Load (or, with auto-TLS, generate) both sides' material and check it against the listen URLs.

        Raises TLSConfigError: an https URL without certificates, half a key pair, an unreadable or mismatched file,
        cipher suites the TLS library or the loaded gRPC cannot apply.
        """
        client_urls = [*config.listen_client_urls, *config.listen_client_http_urls]
        fixtures = config.data_dir / "fixtures"
        suites = config.client_tls.cipher_suites or config.peer_tls.cipher_suites
        try:
            ciphers = openssl_cipher_list(suites)
            check_grpc_cipher_env(suites)
        except CipherSuiteError as exc:
            raise TLSConfigError(str(exc)) from None
        client = _load(config.client_tls, fixtures / "client", client_urls, "client", ciphers)
        peer = _load(config.peer_tls, fixtures / "peer", config.listen_peer_urls, "peer", ciphers)
        for url in client_urls:
            _check_scheme(url, client, config.client_tls, "client")
        for url in config.listen_peer_urls:
            _check_scheme(url, peer, config.peer_tls, "peer")
        identity: PeerIdentityCheck | None = None
        flags = config.peer_tls
        if flags.allowed_cn or flags.allowed_hostname:
            if peer is not None and peer.verify_clients:
                identity = PeerIdentityCheck(flags.allowed_cn, flags.allowed_hostname)
            else:  # as in etcd, nothing to check without verified peer client certificates
                log.warning(
                    "--peer-cert-allowed-cn/--peer-cert-allowed-hostname need verified peer certificates "
                    "(--peer-client-cert-auth or --peer-trusted-ca-file); ignored"
                )
        for side, side_flags, material, needed in (
            ("client", config.client_tls, client, "--client-cert-auth or --trusted-ca-file"),
            ("peer", config.peer_tls, peer, "--peer-client-cert-auth or --peer-trusted-ca-file"),
        ):
            # etcd checks revocation only for the client certificates it verifies, as coord does
            if side_flags.crl_file is not None and (material is None or material.crl is None):
                log.warning("--%s-crl-file needs %s (and certificates); ignored", side, needed)
        return cls(client, peer, identity)

    @property
    def client_crl(self) -> RevocationList | None:
        """The revoked client certificates (``--client-crl-file`` where client certificates are verified), else None."""
        return self.client.crl if self.client is not None else None

    @property
    def peer_crl(self) -> RevocationList | None:
        """The revoked peer certificates (``--peer-crl-file`` where peer certificates are verified), else None."""
        return self.peer.crl if self.peer is not None else None

    def client_interceptors(self) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
        """The client gRPC server's interceptors enforcing this TLS configuration per call (the CRL's
        :class:`CertificateGuard`); to run before any other."""
        return [CertificateGuard([self.client_crl.refusal])] if self.client_crl is not None else []

    def peer_interceptors(self) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
        """The peer gRPC server's interceptors: every peer call is checked against the revocation list and the
        allowed identity, before anything else."""
        checks: list[CertificateCheck] = []
        if self.peer_crl is not None:
            checks.append(self.peer_crl.refusal)
        if self.peer_identity is not None:
            checks.append(self.peer_identity.refusal)
        return [CertificateGuard(checks)] if checks else []

    @property
    def client_cert_auth(self) -> bool:
        """Client certificates are required and verified (then, with auth enabled, their common name is the user)."""
        return self.client is not None and self.client.client_cert_auth

    def add_client_port(self, server: grpc.aio.Server, url: str) -> None:
        _add_port(server, url, self.client)

    def add_peer_port(self, server: grpc.aio.Server, url: str) -> None:
        _add_port(server, url, self.peer)

    def http_ssl_context(self, url: str) -> ssl.SSLContext | None:
        """The ``ssl`` context for an HTTP listen URL: None for http://."""
        if _scheme(url) != "https" or self.client is None:
            return None
        return self.client.server_ssl_context()

    def peer_dialer(self) -> PeerDialer:
        return PeerDialer(self.peer)


class PeerDialer:
    """Opens gRPC channels from this member to another member's peer URLs: plaintext for ``http://``, TLS with this
    member's peer certificate for ``https://``. Never raises for an unreachable peer: the channel's calls fail with
    gRPC's UNAVAILABLE instead, as for a plaintext peer that is down."""

    def __init__(self, material: TLSMaterial | None = None) -> None:
        self._material = material

    async def channel(self, urls: list[str], options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A new channel to the first of ``urls``; the caller closes it."""
        host, port = host_port(urls[0])
        target = f"{host}:{port}"
        if _scheme(urls[0]) != "https":
            return grpc.aio.insecure_channel(target, options=list(options))
        material = self._material
        if material is None:
            return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=list(options))
        if not material.self_signed:
            return grpc.aio.secure_channel(target, material.channel_credentials(), options=list(options))
        # Peer auto-TLS verifies nothing (etcd's InsecureSkipVerify): trust the certificate the peer presents now.
        presented = await _presented_certificate(host, port, material)
        if presented is None:
            return grpc.aio.secure_channel(target, material.channel_credentials(), options=list(options))
        pinned_options = list(options)
        name = _first_subject_name(presented)
        if name is not None:
            pinned_options.append(("grpc.ssl_target_name_override", name))
        return grpc.aio.secure_channel(target, material.channel_credentials(presented), options=pinned_options)


# -- loading -----------------------------------------------------------------------------------------------------------


def _load(flags: TLSFlags, fixtures_dir: Path, urls: Sequence[str], side: str, ciphers: str) -> TLSMaterial | None:
    if flags.auto_tls:
        if flags.has_certs():
            log.warning("ignoring %s auto TLS since certs given", side)
        else:
            hosts = sorted({host_port(url)[0] for url in urls})
            cert_file, key_file = self_signed_certificate(fixtures_dir, hosts, client_auth=side == "peer")
            log.info("%s TLS with the self-signed certificate %s", side, cert_file)
            return _material(cert_file, key_file, None, side, ciphers, client_cert_auth=False, self_signed=True)
    if not flags.has_certs():
        return None
    if flags.cert_file is None or flags.key_file is None:
        raise TLSConfigError(
            f"KeyFile and CertFile must both be present[key: {flags.key_file or ''}, cert: {flags.cert_file or ''}]"
        )
    crl: RevocationList | None = None
    if flags.crl_file is not None and (flags.client_cert_auth or flags.trusted_ca_file is not None):
        crl = RevocationList(flags.crl_file, side)  # never raises: a list that does not load refuses every client
    return _material(
        flags.cert_file,
        flags.key_file,
        flags.trusted_ca_file,
        side,
        ciphers,
        client_cert_auth=flags.client_cert_auth,
        crl=crl,
    )


def _material(
    cert_file: Path,
    key_file: Path,
    ca_file: Path | None,
    side: str,
    ciphers: str,
    *,
    client_cert_auth: bool,
    self_signed: bool = False,
    crl: RevocationList | None = None,
) -> TLSMaterial:
    cert, key = _read(cert_file), _read(key_file)
    if ciphers:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
        except ssl.SSLError:
            raise TLSConfigError(f"--cipher-suites: this TLS library offers none of {ciphers}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TLSConfigError("tls: private key does not match public key") from None
        raise TLSConfigError(f"tls: failed to load the key pair {cert_file}, {key_file}: {exc.reason}") from None
    trusted_ca: bytes | None = None
    verify_clients = client_cert_auth or (ca_file is not None and not self_signed)
    if verify_clients:
        trusted_ca = _read(ca_file) if ca_file is not None else _system_ca_bundle()
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=trusted_ca.decode())
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise TLSConfigError(f"{ca_file}: no PEM certificates found") from None
    try:
        return TLSMaterial(
            cert_file,
            key_file,
            cert,
            key,
            trusted_ca,
            client_cert_auth,
            self_signed,
            ciphers,
            side,
            crl,
            verify_clients=verify_clients,
        )
    except OSError as exc:  # the files changed since they were checked above
        raise TLSConfigError(f"tls: failed to load the key pair {cert_file}, {key_file}: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise TLSConfigError(f"open {path}: {reason}") from None


def _system_ca_bundle() -> bytes:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *_SYSTEM_CA_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return Path(candidate).read_bytes()
    raise TLSConfigError("client certificate auth needs --trusted-ca-file: no system CA bundle was found")


def _scheme(url: str) -> str:
    return urlsplit(url).scheme


def _check_scheme(url: str, material: TLSMaterial | None, flags: TLSFlags, side: str) -> None:
    if _scheme(url) == "https":
        if material is not None:
            return
        if side == "client":
            raise TLSConfigError(
                f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            )
        host, port = host_port(url)
        raise TLSConfigError(f"cannot listen on TLS for {host}:{port}: KeyFile and CertFile are not presented")
    if material is not None:
        log.warning("scheme is HTTP while key and cert files are present; ignoring key and cert files (%s)", url)
    if flags.client_cert_auth:
        log.warning("scheme is HTTP while --%sclient-cert-auth is enabled; ignoring client cert auth for %s",
                    "peer-" if side == "peer" else "", url)  # fmt: skip


def _add_port(server: grpc.aio.Server, url: str, material: TLSMaterial | None) -> None:
    host, port = host_port(url)
    if _scheme(url) == "https":
        if material is None:  # ServerTLS.from_config refuses this configuration
            raise TLSConfigError(f"no TLS configuration for {url}")
        server.add_secure_port(f"{host}:{port}", material.server_credentials())
    else:
        server.add_insecure_port(f"{host}:{port}")


# -- auto-TLS ----------------------------------------------------------------------------------------------------------


def self_signed_certificate(directory: Path, hosts: Sequence[str], *, client_auth: bool = False) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` in ``directory``: the ones already there (both files), else a new self-signed pair
    for ``hosts`` (IP addresses or DNS names), valid one year, as etcd's auto-TLS.

    Raises TLSConfigError when ``cryptography`` is missing or the directory cannot be written.
    """
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    if cert_file.is_file() and key_file.is_file():
        return cert_file, key_file
    try:
        cert_pem, key_pem = _generate_self_signed(hosts, client_auth)
    except ImportError:
        raise TLSConfigError("--auto-tls needs the 'cryptography' package (pip install cryptography)") from None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        cert_file.write_bytes(cert_pem)
    except OSError as exc:
        raise TLSConfigError(f"cannot write the self-signed certificate in {directory}: {exc}") from None
    log.info("created the self-signed certificate %s and key %s", cert_file, key_file)
    return cert_file, key_file


def _generate_self_signed(hosts: Sequence[str], client_auth: bool) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coord")])
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, *([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])]
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _SELF_SIGNED_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# -- pinning a peer's certificate (peer auto-TLS) ----------------------------------------------------------------------


async def _presented_certificate(host: str, port: int, material: TLSMaterial) -> bytes | None:
    """The PEM certificate the TLS server at host:port presents, unverified; None when it cannot be reached."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(material.cert_file, material.key_file)
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), _PIN_TIMEOUT_S)
    except (TimeoutError, OSError) as exc:
        log.debug("cannot fetch the certificate of peer %s:%d: %s", host, port, exc)
        return None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        # Abort rather than close: a TLS close waits for the server's close_notify, which gRPC servers do not send.
        writer.transport.abort()
    return ssl.DER_cert_to_PEM_cert(der).encode() if der else None


def _first_subject_name(cert_pem: bytes) -> str | None:
    """A name the certificate is valid for (its first subject alternative name), to check it against; None if it
    names none or cannot be parsed."""
    try:
        from cryptography import x509
    except ImportError:
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for entry in alt_names:
        if isinstance(entry, x509.IPAddress | x509.DNSName):
            return str(entry.value)
    return None
