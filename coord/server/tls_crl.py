"""Certificate revocation: etcd's ``--client-crl-file`` and ``--peer-crl-file``.

Usage::

    crl = RevocationList(Path("revoked.crl"), "client")
    refusal = crl.refusal(context.auth_context(), context.peer())   # None: allowed; else etcd's reason
    server = grpc.aio.server(interceptors=[CertificateGuard([crl.refusal]), ...])  # every call, streams included
    crl.restrict(ssl_context)                                          # the HTTP listener: OpenSSL checks the leaf

What follows etcd 3.4 (``pkg/transport/listener_tls.go``):

* the file is a certificate revocation list in PEM (``-----BEGIN X509 CRL-----``) or DER;
* a client (or peer) that presents a certificate whose serial number the list revokes is refused; every certificate
  it presents is checked (its chain too), by serial number alone: the list's issuer, signature and validity dates
  are not checked;
* the file is re-read when it changes, so revocations apply without a restart;
* a list that cannot be read or parsed does not stop the server: every caller presenting a certificate is refused,
  with the read or parse error as the reason (a warning is logged at start-up and at each change);
* it applies only where client certificates are verified, i.e. with ``--client-cert-auth`` or
  ``--trusted-ca-file`` (or their ``--peer-`` twins), as in etcd; without either the flag is ignored with a warning.

Differences from etcd:

* etcd checks each connection once, after the handshake, and closes it (the client sees a connection reset, gRPC
  clients UNAVAILABLE). gRPC's Python server cannot veto a handshake, so on the gRPC ports (client and peer) coord
  checks each call instead and refuses it with UNAVAILABLE and etcd's reason (``transport: certificate serial <hex>
  revoked``). A list that changes therefore also refuses calls on connections opened before the change;
* on the HTTP port coord lets OpenSSL check the presented leaf certificate during the handshake (the handshake
  fails, as etcd's connection does). OpenSSL is stricter than etcd: it uses the list only if it is signed by the
  certificate's issuer and is current (``nextUpdate`` not passed), and a certificate whose issuer has no usable
  list in the file is refused; certificates of the chain above the leaf are not checked there.

The verdict for a certificate is computed once per version of the file (a dictionary lookup on the certificate's
bytes afterwards); checking for a change costs one ``stat`` per call.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from coord.server.handler_wrapping import WrappedHandlers, checked_first
from coord.server.tls_reload import file_signature

log = logging.getLogger(__name__)

__all__ = ["CertificateCheck", "CertificateGuard", "RevocationList"]

AuthContext = Mapping[str, Iterable[bytes]]
# (gRPC's auth context, the caller's address) -> None, or the reason to refuse the call.
CertificateCheck = Callable[[AuthContext, str], "str | None"]

_PEM_CRL = b"-----BEGIN X509 CRL"
_MAX_CACHED_VERDICTS = 4096
# (device, inode, size, mtime in ns) of the file; None: it cannot be stat'ed.
_Signature = tuple[int, int, int, int] | None


class RevocationList:
    """The serial numbers revoked by the CRL in ``path``, re-read when the file changes (thread-safe).

    The constructor never raises: a file that does not load makes :meth:`refusal` refuse every certificate, with the
    reason logged, until a loadable list replaces it.
    """

    def __init__(self, path: Path, side: str = "client") -> None:
        self.path = path
        self._side = side
        self._lock = threading.Lock()
        self._seen: _Signature | bool = False  # False: never loaded
        self._revoked: frozenset[int] = frozenset()
        self._crl: x509.CertificateRevocationList | None = None
        self._error: str | None = None
        self._verdicts: dict[tuple[bytes, ...], str | None] = {}
        self._refresh()

    @property
    def error(self) -> str | None:
        """Why the file's current contents do not load (every certificate is then refused); None once it loads."""
        with self._lock:
            self._refresh()
            return self._error

    def refusal(self, auth_context: AuthContext, peer: str = "") -> str | None:
        """None when the certificates gRPC's ``auth_context`` describes are not revoked (or none was presented), else
        the reason, etcd's wording: ``transport: certificate serial <hex> revoked``, or the error loading the file.
        ``peer`` (the caller's address) is only logged, once per certificate and version of the file."""
        presented = (*auth_context.get("x509_pem_cert", ()), *auth_context.get("x509_pem_cert_chain", ()))
        if not presented:
            return None  # as etcd: only presented certificates are checked
        with self._lock:
            self._refresh()
            try:
                return self._verdicts[presented]
            except KeyError:
                pass
            verdict = self._error if self._error is not None else self._revoked_serial(presented)
            if len(self._verdicts) >= _MAX_CACHED_VERDICTS:
                self._verdicts.clear()
            self._verdicts[presented] = verdict
        if verdict is not None:
            log.warning("%s TLS: rejected calls from %s (error %r)", self._side, peer or "a caller", verdict)
        return verdict

    def restrict(self, context: ssl.SSLContext) -> None:
        """Make ``context`` (a server context verifying client certificates) refuse handshakes presenting a leaf
        certificate the list revokes. With a list that does not load, it refuses every client certificate (OpenSSL
        finds no list for the issuer). Never raises for the list's contents."""
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        with self._lock:
            self._refresh()
            crl = self._crl
        if crl is None:
            return
        # OpenSSL loads lists from PEM files only; the file may be DER.
        with tempfile.NamedTemporaryFile(prefix="coord-crl-", suffix=".pem") as pem:
            pem.write(crl.public_bytes(serialization.Encoding.PEM))
            pem.flush()
            context.load_verify_locations(cafile=pem.name)

    # -- loading ---------------------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read the file if it changed since it was last read; call with the lock held."""
        signature = self._signature()
        if signature == self._seen:
            return
        self._seen = signature
        self._verdicts.clear()
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self._failed(f"open {self.path}: {(exc.strerror or str(exc)).lower()}")
            return
        try:
            crl = _parse(data)
        except ValueError as exc:
            self._failed(f"x509: cannot parse the CRL in {self.path}: {exc}")
            return
        self._crl, self._error = crl, None
        self._revoked = frozenset(abs(entry.serial_number) for entry in crl)
        log.info("%s TLS: %d certificates revoked by %s", self._side, len(self._revoked), self.path)

    def _failed(self, error: str) -> None:
        self._crl, self._error, self._revoked = None, error, frozenset()
        log.warning("%s TLS: %s; refusing every certificate until the CRL loads", self._side, error)

    def _signature(self) -> _Signature:
        return file_signature(self.path)

    def _revoked_serial(self, presented: tuple[bytes, ...]) -> str | None:
        for blob in presented:
            try:
                certificates = x509.load_pem_x509_certificates(blob)
            except ValueError:
                continue  # gRPC verified these certificates; one it reports but we cannot parse is not a serial match
            for certificate in certificates:
                serial = abs(certificate.serial_number)
                if serial in self._revoked:
                    return f"transport: certificate serial {_go_hex(serial)} revoked"
        return None


def _parse(data: bytes) -> x509.CertificateRevocationList:
    """PEM when the data starts with a CRL's PEM header (leading whitespace aside), else DER; raises ValueError."""
    if data.lstrip().startswith(_PEM_CRL):
        return x509.load_pem_x509_crl(data.lstrip())
    return x509.load_der_x509_crl(data)


def _go_hex(serial: int) -> str:
    """The serial as etcd prints it: its big-endian bytes in lowercase hex (an even number of digits)."""
    return serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex()


# -- the gRPC check ------------------------------------------------------------------------------------------------


class CertificateGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses every call (unary or streaming) whose caller's certificate a check refuses (a revocation list's
    :meth:`RevocationList.refusal`, a peer identity's), with UNAVAILABLE and the check's reason, before the
    servicer runs. Each check takes gRPC's auth context and the caller's address and returns None or the reason.

    Usage (first in the list: etcd refuses the connection before it decodes anything)::

        server = grpc.aio.server(interceptors=[CertificateGuard([crl.refusal]), DecodeGuard(), ...])

    The handlers it wraps must be coroutines or async generators, as every coord servicer method is.
    """

    def __init__(self, checks: Sequence[CertificateCheck]) -> None:
        self._checks = tuple(checks)
        # method -> (the handler the chain answered, its checked form): built once per handler, not on every call.
        self._checked = WrappedHandlers(lambda handler, _method: checked_first(handler, self._check))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._checked.get(details.method, handler)

    async def _check(self, request: Any, context: Any) -> None:
        auth_context, peer = context.auth_context(), context.peer()
        for check in self._checks:
            refusal = check(auth_context, peer)
            if refusal is not None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, refusal)
