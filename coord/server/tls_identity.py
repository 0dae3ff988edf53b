"""Which peers may talk to this member: etcd's ``--peer-cert-allowed-cn`` and ``--peer-cert-allowed-hostname``.

Usage::

    check = PeerIdentityCheck(allowed_cn="etcd.local")
    refusal = check.refusal(context.auth_context(), context.peer())   # None: allowed; else etcd's error text

With peer client-certificate auth, etcd refuses a peer whose verified certificate does not carry the allowed common
name (``CommonName authentication failed``), or is not valid for the allowed hostname (the certificate's DNS or IP
subject alternative names, as Go's ``VerifyHostname``: ``HostnameAuthentication authentication failed``). As in
etcd 3.4, when both flags are given only the hostname is checked.

etcd fails the TLS handshake; gRPC's Python server cannot veto a handshake, so coord checks each incoming peer call
instead and refuses it with UNAVAILABLE (what a peer sees for a failed handshake) before it does anything. The check
applies to the peer calls this member receives; the server certificates of the peers it dials are verified against
the CA only (etcd also checks their common name).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from coord.server.tls_crl import AuthContext

__all__ = ["PeerIdentityCheck"]

log = logging.getLogger(__name__)

# Refused certificates remembered so that a peer retrying all the time is logged once, not on every call.
_MAX_LOGGED = 64


@dataclass(frozen=True)
class PeerIdentityCheck:
    """The allowed common name and/or hostname of peers' client certificates (at least one is set)."""

    allowed_cn: str | None = None
    allowed_hostname: str | None = None
    _logged: set[tuple[bytes, ...]] = field(default_factory=set, compare=False, repr=False)

    def refusal(self, auth_context: AuthContext, peer: str = "") -> str | None:
        """None when the verified client certificate described by gRPC's ``auth_context`` is allowed, else the
        reason (etcd's wording), logged once per certificate with ``peer`` (the caller's address). A call without a
        verified certificate is refused."""
        reason = self._reason(auth_context)
        if reason is not None:
            presented = tuple(auth_context.get("x509_pem_cert", ()))
            if presented not in self._logged:
                if len(self._logged) >= _MAX_LOGGED:
                    self._logged.clear()
                self._logged.add(presented)
                log.warning("rejected peer calls from %s (error %r)", peer or "a caller", reason)
        return reason

    def _reason(self, auth_context: AuthContext) -> str | None:
        if self.allowed_hostname is not None:
            if _valid_for(self.allowed_hostname, auth_context):
                return None
            return "HostnameAuthentication authentication failed"
        if self.allowed_cn is not None:
            if self.allowed_cn.encode() in auth_context.get("x509_common_name", ()):
                return None
            return "CommonName authentication failed"
        return None


def _valid_for(host: str, auth_context: AuthContext) -> bool:
    """The certificate is valid for ``host``: an IP address among its IP SANs, or a DNS name matching one of its DNS
    SANs (case-insensitive; ``*.`` matches one leftmost label)."""
    candidate = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        name = host.lower().rstrip(".")
        return any(_dns_match(san.decode(errors="replace"), name) for san in auth_context.get("peer_dns", ()))
    for san in auth_context.get("peer_ip", ()):
        try:
            if ipaddress.ip_address(san.decode()) == address:
                return True
        except ValueError:
            continue
    return False


def _dns_match(pattern: str, name: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if not pattern or not name:
        return False
    pattern_labels, name_labels = pattern.split("."), name.split(".")
    if len(pattern_labels) != len(name_labels):
        return False
    for i, (want, got) in enumerate(zip(pattern_labels, name_labels, strict=True)):
        if i == 0 and want == "*":
            continue
        if want != got:
            return False
    return True
