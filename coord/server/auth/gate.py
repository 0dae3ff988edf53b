"""The API layer's side of auth: who makes a call, and whether they may read what they ask for.

Every servicer asks the gate for the caller's :class:`AuthInfo` (from the ``token`` gRPC metadata entry etcd clients
send, or ``authorization`` as etcd's gateway sends it), attaches it to the entries it proposes (the applier checks
writes against it on every member), and checks reads here before serving them from local state.

Usage::

    gate = AuthGate(backend, provider_from_flag("simple", ttl=300), bcrypt_cost=10)
    info = gate.credentials(context)          # None without credentials; Rejected for a bad token
    gate.check_range(info, b"key", b"")       # Rejected("etcdserver: permission denied") when not allowed

Client-certificate auth: with ``client_cert_auth=True`` (etcd's ``--client-cert-auth``) a call without a token is
made by the user named by its verified client certificate's common name (:meth:`AuthGate.from_cert_cn`), as in etcd;
calls that come through the JSON gateway (``grpcgateway-accept`` metadata) never are, since the gateway's own
certificate would otherwise speak for every HTTP client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import bcrypt
import grpc

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import (
    AUTH_FAILED,
    AUTH_NOT_ENABLED,
    INVALID_AUTH_TOKEN,
    NO_PASSWORD_USER,
)
from coord.server.auth.store import MAX_NAME_BYTES, AuthStore
from coord.server.auth.tokens import TokenProvider
from coord.server.rejection import Rejected
from coord.server.requests import AuthInfo
from coord.server.storage.backend import Backend, u64

TOKEN_METADATA_KEYS = ("token", "authorization")
_GATEWAY_MARK = "grpcgateway-accept"
# bcrypt reads at most this many bytes of a password (etcd's Go bcrypt ignores the rest; so does coord).
BCRYPT_MAX_PASSWORD = 72


def password_bytes(password: str) -> bytes:
    return password.encode()[:BCRYPT_MAX_PASSWORD]


def hash_password(password: str, cost: int) -> bytes:
    """A bcrypt hash of ``password`` (slow on purpose: call it off the event loop)."""
    return bcrypt.hashpw(password_bytes(password), bcrypt.gensalt(rounds=cost))


class AuthGate:
    """Resolves credentials and checks reads against the last committed auth state. Safe on the event loop (every
    method is a few LMDB reads) except :meth:`check_password`, which is async and hashes on a worker thread."""

    def __init__(
        self, backend: Backend, tokens: TokenProvider, bcrypt_cost: int = 10, client_cert_auth: bool = False
    ) -> None:
        self.backend = backend
        self.store = AuthStore(backend)
        self.tokens = tokens
        self.bcrypt_cost = bcrypt_cost
        self.client_cert_auth = client_cert_auth

    # -- who is calling ---------------------------------------------------------------------------------------------

    def credentials(self, context: grpc.aio.ServicerContext[Any, Any]) -> AuthInfo | None:
        """The caller's AuthInfo: from its token, else (with client-cert auth) its certificate; None without.

        Raises Rejected(``invalid auth token``) for a token that is unknown, expired, or whose user changed
        password, was deleted, or whose auth was disabled since (etcd 3.4 checks a token even with auth disabled).
        """
        metadata = _metadata(context.invocation_metadata())
        token = next((metadata[k] for k in TOKEN_METADATA_KEYS if metadata.get(k)), None)
        if token is not None:
            return self.from_token(token)
        if self.client_cert_auth and _GATEWAY_MARK not in metadata:
            common_name = _certificate_common_name(context)
            if common_name:
                return self.from_cert_cn(common_name)
        return None

    def from_token(self, token: str) -> AuthInfo:
        """The AuthInfo a token stands for; raises Rejected(INVALID_AUTH_TOKEN)."""
        info = self.tokens.info(token)
        if info is None or len(info.username.encode()) > MAX_NAME_BYTES:
            raise Rejected(INVALID_AUTH_TOKEN)
        if info.revision is not None:
            return AuthInfo(info.username, info.revision)
        with self.backend.read() as txn:
            if not self.store.enabled(txn) or self.credential_stamp(txn, info.username) != info.stamp:
                raise Rejected(INVALID_AUTH_TOKEN)
            return AuthInfo(info.username, self.store.revision(txn))

    def from_cert_cn(self, common_name: str) -> AuthInfo:
        """The hook for TLS client-certificate auth: the certificate's common name is the user (etcd's
        AuthInfoFromTLS), checked at the current auth revision."""
        with self.backend.read() as txn:
            return AuthInfo(common_name, self.store.revision(txn))

    def credential_stamp(self, txn: Any, username: str) -> bytes | None:
        """What a simple token is bound to: the auth enable epoch and the user's password hash (None: no user)."""
        user = self.store.user(txn, username)
        if user is None:
            return None
        return u64(self.store.enable_epoch(txn)) + user.password

    # -- Authenticate -----------------------------------------------------------------------------------------------

    async def check_password(self, name: str, password: str) -> tuple[int, bytes]:
        """etcd's CheckPassword: (auth revision, credential stamp) when ``password`` is ``name``'s password.

        Raises Rejected: ``authentication is not enabled``, ``authentication failed, invalid user ID or password``,
        or (a user created with --no-password) etcd 3.4's untranslated no-password error.
        """
        with self.backend.read() as txn:
            if not self.store.enabled(txn):
                raise Rejected(AUTH_NOT_ENABLED)
            user = self.store.user(txn, name)
            if user is None:
                raise Rejected(AUTH_FAILED)
            if user.options.no_password:
                raise Rejected(NO_PASSWORD_USER)
            revision = self.store.revision(txn)
            stamp = u64(self.store.enable_epoch(txn)) + user.password
        hashed = bytes(user.password)
        ok = await asyncio.to_thread(_matches, password, hashed)
        if not ok:
            raise Rejected(AUTH_FAILED)
        return revision, stamp

    def revision(self) -> int:
        with self.backend.read() as txn:
            return self.store.revision(txn)

    # -- checks against committed state -----------------------------------------------------------------------------

    def enabled(self) -> bool:
        with self.backend.read() as txn:
            return self.store.enabled(txn)

    def check_range(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        """Read permission on ``[key, range_end)``; raises Rejected."""
        with self.backend.read() as txn:
            self.store.check_key(txn, info, key, range_end, write=False)

    def check_write(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        """Write permission on ``[key, range_end)``; raises Rejected."""
        with self.backend.read() as txn:
            self.store.check_key(txn, info, key, range_end, write=True)

    def check_txn(self, info: AuthInfo | None, request: rpc_pb2.TxnRequest) -> None:
        with self.backend.read() as txn:
            self.store.check_txn(txn, info, request)

    def check_keys_readable(self, info: AuthInfo | None, keys: Iterable[bytes]) -> None:
        """Read permission on each of ``keys`` (nothing to check for a root-role holder); raises Rejected."""
        with self.backend.read() as txn:
            if self.store.is_admin(txn, info):
                return
            for key in keys:
                self.store.check_key(txn, info, key, b"", write=False)

    def check_admin(self, info: AuthInfo | None) -> None:
        """The root role (when auth is enabled); raises Rejected."""
        with self.backend.read() as txn:
            self.store.check_admin(txn, info)

    def check_watch(self, info: AuthInfo | None, request: rpc_pb2.WatchCreateRequest) -> None:
        """Read permission on a watch's range, with etcd's conversions (empty key = ``\\0``; ``\\0`` range end =
        every key from key on); raises Rejected."""
        key = request.key or b"\x00"
        self.check_range(info, key, request.range_end)

    def cancel_reason(self, refusal: Rejected) -> str:
        """How etcd words a refused watch in ``cancel_reason`` (Go's rendering of the gRPC status)."""
        spec = refusal.spec
        code = "".join(part.capitalize() for part in spec.code.name.split("_"))
        return f"rpc error: code = {code} desc = {spec.message}"


def _matches(password: str, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password_bytes(password), hashed)
    except ValueError:  # not a bcrypt hash (e.g. empty)
        return False


def _metadata(items: Iterable[tuple[str, Any]] | None) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for key, value in items or ():
        if isinstance(value, bytes):
            continue
        out.setdefault(key.lower(), value)
    return out


def _certificate_common_name(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    auth_context = context.auth_context() or {}
    names = auth_context.get("x509_common_name") or []
    for name in names:
        return name.decode() if isinstance(name, bytes) else str(name)
    return None
