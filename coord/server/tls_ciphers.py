"""``--cipher-suites``: etcd's (Go's) TLS cipher suite names, mapped to the OpenSSL names that Python's ``ssl`` and
gRPC's TLS library take.

Usage::

    names = openssl_cipher_list(["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"])   # "ECDHE-ECDSA-AES128-GCM-SHA256"
    context.set_ciphers(names)                                               # the HTTP listener
    os.environ[GRPC_CIPHER_ENV] = names                                      # gRPC: before grpc is imported

What follows etcd 3.4 (built with Go 1.19):

* the accepted names are Go's ``tls.CipherSuites()`` and ``tls.InsecureCipherSuites()`` plus etcd's two short
  ChaCha20 aliases; any other name (also an empty one, as in a trailing comma) stops the server with etcd's message
  ``unexpected TLS cipher suite "<name>"``;
* the list restricts TLS 1.2 handshakes only: TLS 1.3 suites are not configurable (Go ignores them in the list, and so
  does coord), so a TLS 1.3 client always negotiates.

Where coord differs, it refuses at start-up rather than serve something other than asked: the RC4 suites (neither
OpenSSL 3 nor gRPC's BoringSSL offer them) and a list naming only TLS 1.3 suites (which in Go leaves only TLS 1.3
usable; gRPC's Python API cannot cap the TLS version).

gRPC reads ``GRPC_SSL_CIPHER_SUITES`` (:data:`GRPC_CIPHER_ENV`) once, when the grpc module loads, so
``coord.server.main`` sets it and re-executes the process before serving; :func:`check_grpc_cipher_env` refuses to
serve a list the loaded gRPC does not apply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

__all__ = [
    "GRPC_CIPHER_ENV",
    "CipherSuiteError",
    "check_grpc_cipher_env",
    "openssl_cipher_list",
    "parse_cipher_suites",
]

GRPC_CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"


class CipherSuiteError(ValueError):
    """A ``--cipher-suites`` entry coord cannot serve; the message is etcd's where etcd has one."""


# Go's TLS 1.0-1.2 suite names (IANA's) and the OpenSSL name of each; None: accepted by etcd, served by neither TLS
# library coord uses.
_TLS12: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    # etcd's aliases for the two above
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    # Go's insecure list
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_RSA_WITH_RC4_128_SHA": None,
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": None,
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": None,
}
# TLS 1.3 suites: etcd accepts the names, and they change nothing.
_TLS13 = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})


def parse_cipher_suites(value: str) -> tuple[str, ...]:
    """The names in a ``--cipher-suites`` value (comma-separated, kept as given; an empty value is no list).

    Raises CipherSuiteError (etcd's ``unexpected TLS cipher suite "<name>"``) for a name etcd does not know.
    """
    if value == "":
        return ()
    names = tuple(part.strip() for part in value.split(","))
    openssl_cipher_list(names)
    return names


def openssl_cipher_list(names: Sequence[str]) -> str:
    """The OpenSSL cipher string (``:``-separated, in the given order, without duplicates) for Go suite ``names``;
    the TLS 1.3 names are accepted and left out.

    Raises CipherSuiteError for an unknown name, an RC4 suite, or a list with no TLS 1.2 suite left.
    """
    openssl: list[str] = []
    for name in names:
        if name in _TLS13:
            continue
        if name not in _TLS12:
            raise CipherSuiteError(f"unexpected TLS cipher suite {json.dumps(name)}")
        mapped = _TLS12[name]
        if mapped is None:
            raise CipherSuiteError(f"TLS cipher suite {json.dumps(name)} is not supported by coord (RC4 is broken)")
        if mapped not in openssl:
            openssl.append(mapped)
    if names and not openssl:
        raise CipherSuiteError(
            "--cipher-suites names only TLS 1.3 suites, which are not configurable; name at least one TLS 1.2 suite"
        )
    return ":".join(openssl)


def check_grpc_cipher_env(names: Sequence[str]) -> None:
    """With ``names`` (``--cipher-suites``), raise CipherSuiteError unless ``GRPC_SSL_CIPHER_SUITES`` holds exactly
    their OpenSSL list: gRPC reads the variable when it loads, so a mismatch means gRPC would serve other suites than
    asked. ``coord.server.main`` sets it before gRPC loads; an embedding program must do the same. Without ``names``
    nothing is checked: a variable set by the operator is gRPC's own setting and is left to apply."""
    if not names:
        return
    wanted = openssl_cipher_list(names)
    if os.environ.get(GRPC_CIPHER_ENV) != wanted:
        raise CipherSuiteError(
            f"--cipher-suites: gRPC applies cipher suites only from {GRPC_CIPHER_ENV} set before it loads; "
            f"start coord-server through coord.server.main, or set {GRPC_CIPHER_ENV}={wanted} beforehand"
        )
