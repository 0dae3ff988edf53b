"""Certificate rotation without a restart: a member re-reads its certificate and key files for new TLS handshakes, as
etcd re-reads ``--cert-file``/``--key-file`` (and the ``--peer-*`` ones) on every handshake.

Usage::

    pair = ReloadingKeyPair(cert_file, key_file, make_context, "client")
    credentials = pair.grpc_server_credentials(trusted_ca, require_client_auth=True)   # gRPC listeners
    context = pair.ssl_server_context()                                             # the HTTP listener
    cert_pem, key_pem = pair.current().cert, pair.current().key                     # dialing peers

Guarantees:

* every new connection (a new TLS handshake) is served with the pair on disk at that moment, once the files changed
  (their size, modification time or inode) and load as a matching pair; connections already open keep theirs;
* a pair that cannot be loaded (a missing or unreadable file, a key that does not match the certificate, say midway
  through replacing the two files) is not served: the last good pair stays in use and a warning is logged, once per
  change of the files. etcd instead fails those handshakes; coord keeps serving;
* the trusted CA, client-certificate policy and cipher suites are fixed at start-up, as in etcd;
* files given as ``watched`` (the CRL of :mod:`coord.server.tls_crl`) are part of the context: when one of them
  changes, the context is rebuilt for new handshakes even though the pair is the same (a watched file that is
  missing is not an error; ``make_context`` decides what that means).

Checking the files costs two ``stat`` calls per handshake (plus one per watched file); they are read and parsed only
when they changed.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

log = logging.getLogger(__name__)

__all__ = ["KeyPair", "ReloadingKeyPair"]

# (device, inode, size, mtime in ns) of the certificate, the key and each watched file (None: a watched file cannot be
# stat'ed); None: the certificate or the key cannot be stat'ed.
_Stat = tuple[int, int, int, int]
_Signature = tuple[_Stat | None, ...] | None


@dataclass(frozen=True)
class KeyPair:
    """One loaded certificate and key: PEM bytes, and a server ``ssl`` context loaded from exactly these bytes.
    ``generation`` grows by one with every pair loaded after the first."""

    cert: bytes
    key: bytes
    context: ssl.SSLContext
    generation: int


class ReloadingKeyPair:
    """The certificate/key pair in ``cert_file``/``key_file``, re-read when the files change (thread-safe: gRPC asks
    from its own threads).

    ``make_context(cert_file, key_file)`` builds the server ``ssl`` context for the HTTP listener with the side's
    whole policy; it must raise ``ssl.SSLError`` or ``OSError`` when the files do not load. ``watched``: further
    files ``make_context`` reads, whose change rebuilds the context. The constructor loads the first pair and raises
    what ``make_context`` or reading the files raises.
    """

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        make_context: Callable[[Path, Path], ssl.SSLContext],
        side: str,
        *,
        watched: Sequence[Path] = (),
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._watched = tuple(watched)
        self._make_context = make_context
        self._side = side
        self._lock = threading.Lock()
        signature = self._signature()
        loaded = self._load()
        if loaded is None:  # the files changed while they were read: once more, and let errors escape
            signature = self._signature()
            cert, key = cert_file.read_bytes(), key_file.read_bytes()
            loaded = (cert, key, make_context(cert_file, key_file))
        self._seen = signature
        self._pair = KeyPair(*loaded, generation=0)

    def current(self) -> KeyPair:
        """The pair to serve a new handshake with: the files' pair if they changed and load, else the last good one.
        Never raises."""
        with self._lock:
            signature = self._signature()
            if signature != self._seen:
                self._seen = signature
                self._reload()
            return self._pair

    def _reload(self) -> None:
        try:
            loaded = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning(
                "%s TLS: cannot load the new certificate %s and key %s (%s); keeping the certificate in use",
                self._side, self.cert_file, self.key_file, exc,
            )  # fmt: skip
            return
        if loaded is None:
            self._seen = None  # still being written: look again at the next handshake
            return
        cert, key, context = loaded
        if (cert, key) == (self._pair.cert, self._pair.key):
            if self._watched:  # perhaps a watched file changed: same pair (same generation), rebuilt context
                self._pair = KeyPair(cert, key, context, self._pair.generation)
            return
        self._pair = KeyPair(cert, key, context, self._pair.generation + 1)
        log.info("%s TLS: serving the new certificate in %s", self._side, self.cert_file)

    def _load(self) -> tuple[bytes, bytes, ssl.SSLContext] | None:
        """Read both files and build the context; None when the files changed meanwhile (the bytes read might not
        be what the context loaded)."""
        before = self._contents()
        context = self._make_context(self.cert_file, self.key_file)
        if self._contents() != before:
            return None
        return before[0], before[1], context

    def _contents(self) -> tuple[bytes, bytes, tuple[bytes | None, ...]]:
        """The certificate's and the key's bytes (raising OSError), and each watched file's (None if unreadable)."""
        watched: list[bytes | None] = []
        for path in self._watched:
            try:
                watched.append(path.read_bytes())
            except OSError:
                watched.append(None)
        return self.cert_file.read_bytes(), self.key_file.read_bytes(), tuple(watched)

    def _signature(self) -> _Signature:
        cert, key = file_signature(self.cert_file), file_signature(self.key_file)
        if cert is None or key is None:
            return None
        return (cert, key, *(file_signature(path) for path in self._watched))

    # -- listeners -----------------------------------------------------------------------------------------------

    def grpc_server_credentials(self, trusted_ca: bytes | None, *, require_client_auth: bool) -> grpc.ServerCredentials:
        """gRPC server credentials that serve :meth:`current` to each new connection; client certificates are
        required (and verified against ``trusted_ca``) with ``require_client_auth``."""
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._pair, trusted_ca),
            # gRPC documents None as "keep the current configuration"; its type stubs omit it.
            cast("Callable[[], grpc.ServerCertificateConfiguration]", _Fetcher(self, trusted_ca)),
            require_client_authentication=require_client_auth,
        )

    def ssl_server_context(self) -> ssl.SSLContext:
        """A server ``ssl`` context whose handshakes use :meth:`current`'s context (swapped in by the SNI callback,
        which OpenSSL runs for every ClientHello, with or without a server name)."""
        listener = self._make_context(self.cert_file, self.key_file)

        def swap(connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
            connection.context = self.current().context

        listener.sni_callback = swap
        return listener


class _Fetcher:
    """gRPC's certificate_configuration_fetcher: a new configuration when the pair changed since this listener's
    last one, else None (keep it). Called from gRPC's threads before each handshake; never raises."""

    def __init__(self, pair: ReloadingKeyPair, trusted_ca: bytes | None) -> None:
        self._pair = pair
        self._trusted_ca = trusted_ca
        self._lock = threading.Lock()
        self._generation = 0

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            pair = self._pair.current()
            with self._lock:
                # <=: a thread that read an older pair must not replace a newer configuration another one installed
                if pair.generation <= self._generation:
                    return None
                self._generation = pair.generation
            return _configuration(pair, self._trusted_ca)
        except Exception:  # an exception would fail the handshake inside gRPC's C core: keep serving instead
            log.exception("TLS: reloading the certificate failed; keeping the certificate in use")
            return None


def _configuration(pair: KeyPair, trusted_ca: bytes | None) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pair.key, pair.cert)], root_certificates=trusted_ca)


def file_signature(path: Path) -> _Stat | None:
    """(device, inode, size, mtime in ns) of ``path``, None when it cannot be stat'ed: what tells a rewritten or
    replaced file from the one read before."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
