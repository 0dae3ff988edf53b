"""Typed errors, and the catalogue of etcd's error codes and messages.

The server rejects requests with exactly the gRPC status code and message etcd uses (clients match on both); the
client turns those statuses back into the typed exceptions below. Both halves read the same catalogue, so a message
is spelled in one place only.

Every exception raised by coord derives from :class:`CoordError`. Errors that came from a server carry the gRPC
``code`` and the server's ``details`` string.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

__all__ = [
    "AuthFailedError",
    "AuthOldRevisionError",
    "ClientClosedError",
    "CompactedError",
    "CoordError",
    "DeadlineExceededError",
    "DuplicateKeyError",
    "EmptyKeyError",
    "EtcdError",
    "FutureRevisionError",
    "InvalidAuthTokenError",
    "KeyNotFoundError",
    "LeaseExistsError",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "LeaseTTLTooLargeError",
    "NoLeaderError",
    "NoSpaceError",
    "PermissionDeniedError",
    "RequestTooLargeError",
    "SessionLostError",
    "TooManyOpsError",
    "TooManyRequestsError",
    "UnavailableError",
    "ValueProvidedError",
    "WatchCanceledError",
    "error_from_status",
]


class CoordError(Exception):
    """Base class of every error coord raises."""


class EtcdError(CoordError):
    """A request was rejected by the server (coord-server or etcd) with a gRPC status.

    ``code`` is the gRPC status code, ``details`` the server's message (for example ``etcdserver: key is not
    provided``).
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class UnavailableError(EtcdError):
    """The cluster cannot serve the request right now (no leader, leader changed, timeout); safe reads may retry."""


class NoLeaderError(UnavailableError):
    """``etcdserver: no leader``."""


class EmptyKeyError(EtcdError):
    """``etcdserver: key is not provided``."""


class KeyNotFoundError(EtcdError):
    """``etcdserver: key not found`` (ignore_value / ignore_lease on a missing key, or an empty txn op)."""


class ValueProvidedError(EtcdError):
    """``etcdserver: value is provided`` (a value given together with ignore_value)."""


class LeaseProvidedError(EtcdError):
    """``etcdserver: lease is provided`` (a lease given together with ignore_lease)."""


class TooManyOpsError(EtcdError):
    """``etcdserver: too many operations in txn request``."""


class DuplicateKeyError(EtcdError):
    """``etcdserver: duplicate key given in txn request``."""


class RequestTooLargeError(EtcdError):
    """``etcdserver: request is too large``."""


class CompactedError(EtcdError):
    """``etcdserver: mvcc: required revision has been compacted``."""


class FutureRevisionError(EtcdError):
    """``etcdserver: mvcc: required revision is a future revision``."""


class LeaseNotFoundError(EtcdError):
    """``etcdserver: requested lease not found``."""


class LeaseExistsError(EtcdError):
    """``etcdserver: lease already exists``."""


class LeaseTTLTooLargeError(EtcdError):
    """``etcdserver: too large lease TTL``."""


class NoSpaceError(EtcdError):
    """``etcdserver: mvcc: database space exceeded`` (the NOSPACE alarm is raised)."""


class PermissionDeniedError(EtcdError):
    """``etcdserver: permission denied``."""


class InvalidAuthTokenError(EtcdError):
    """``etcdserver: invalid auth token``."""


class AuthFailedError(EtcdError):
    """``etcdserver: authentication failed, invalid user ID or password``."""


class AuthOldRevisionError(EtcdError):
    """``etcdserver: revision of auth store is old``: users or roles changed after the token was issued. The
    client authenticates again and repeats the call, as etcd's clientv3 does."""


class TooManyRequestsError(UnavailableError):
    """``etcdserver: too many requests``."""


class DeadlineExceededError(EtcdError):
    """The call's deadline passed before a server answered (gRPC DEADLINE_EXCEEDED). A write may or may not have
    been applied."""


class ClientClosedError(CoordError):
    """The client was closed; no further calls are possible."""


class WatchCanceledError(CoordError):
    """The server canceled a watch for a reason the client cannot recover from (``reason`` is the server's text).

    ``compact_revision`` is set when the watch's start revision had been compacted and the watch could not re-sync.
    """

    def __init__(self, reason: str, compact_revision: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.compact_revision = compact_revision


class SessionLostError(CoordError):
    """A session's lease expired or was revoked: everything held under it (locks, registrations) is gone."""


@dataclass(frozen=True)
class ErrorSpec:
    """One etcd error: the gRPC code and message the server sends, and the exception the client raises."""

    code: grpc.StatusCode
    message: str
    exception: type[EtcdError]


_C = grpc.StatusCode

EMPTY_KEY = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: key is not provided", EmptyKeyError)
KEY_NOT_FOUND = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: key not found", KeyNotFoundError)
VALUE_PROVIDED = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: value is provided", ValueProvidedError)
LEASE_PROVIDED = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: lease is provided", LeaseProvidedError)
TOO_MANY_OPS = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request", TooManyOpsError)
DUPLICATE_KEY = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request", DuplicateKeyError)
REQUEST_TOO_LARGE = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: request is too large", RequestTooLargeError)
COMPACTED = ErrorSpec(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted", CompactedError)
FUTURE_REV = ErrorSpec(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision", FutureRevisionError)
LEASE_NOT_FOUND = ErrorSpec(_C.NOT_FOUND, "etcdserver: requested lease not found", LeaseNotFoundError)
LEASE_EXISTS = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: lease already exists", LeaseExistsError)
LEASE_TTL_TOO_LARGE = ErrorSpec(_C.OUT_OF_RANGE, "etcdserver: too large lease TTL", LeaseTTLTooLargeError)
NO_SPACE = ErrorSpec(_C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded", NoSpaceError)
NO_LEADER = ErrorSpec(_C.UNAVAILABLE, "etcdserver: no leader", NoLeaderError)
LEADER_CHANGED = ErrorSpec(_C.UNAVAILABLE, "etcdserver: leader changed", UnavailableError)
REQUEST_TIMEOUT = ErrorSpec(_C.UNAVAILABLE, "etcdserver: request timed out", UnavailableError)
STOPPED = ErrorSpec(_C.UNAVAILABLE, "etcdserver: server stopped", UnavailableError)
TOO_MANY_REQUESTS = ErrorSpec(_C.RESOURCE_EXHAUSTED, "etcdserver: too many requests", TooManyRequestsError)
PERMISSION_DENIED = ErrorSpec(_C.PERMISSION_DENIED, "etcdserver: permission denied", PermissionDeniedError)
INVALID_AUTH_TOKEN = ErrorSpec(_C.UNAUTHENTICATED, "etcdserver: invalid auth token", InvalidAuthTokenError)
AUTH_FAILED = ErrorSpec(
    _C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password", AuthFailedError
)
MEMBER_NOT_FOUND = ErrorSpec(_C.NOT_FOUND, "etcdserver: member not found", EtcdError)
MEMBER_BAD_URLS = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid", EtcdError)
PEER_URL_EXISTS = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists", EtcdError)
MEMBER_NOT_LEARNER = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member", EtcdError)
LEARNER_NOT_READY = ErrorSpec(
    _C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member which is in sync with leader", EtcdError
)
TOO_MANY_LEARNERS = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster", EtcdError)
BAD_LEADER_TRANSFEREE = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: bad leader transferee", EtcdError)
NOT_LEADER = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: not leader", EtcdError)
NOT_CAPABLE = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: not capable", EtcdError)
MALFORMED_REQUEST = ErrorSpec(_C.INVALID_ARGUMENT, "coord: the request could not be decoded", EtcdError)
# Auth management (etcd 3.4's codes and messages).
ROOT_USER_MISSING = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: root user does not exist", EtcdError)
ROOT_ROLE_MISSING = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: root user does not have root role", EtcdError)
USER_ALREADY_EXISTS = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: user name already exists", EtcdError)
USER_EMPTY = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: user name is empty", EtcdError)
USER_NOT_FOUND = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: user name not found", EtcdError)
ROLE_ALREADY_EXISTS = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: role name already exists", EtcdError)
ROLE_NOT_FOUND = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: role name not found", EtcdError)
ROLE_EMPTY = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: role name is empty", EtcdError)
PERMISSION_NOT_GIVEN = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: permission not given", EtcdError)
ROLE_NOT_GRANTED = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user", EtcdError)
PERMISSION_NOT_GRANTED = ErrorSpec(
    _C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role", EtcdError
)
AUTH_NOT_ENABLED = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled", EtcdError)
INVALID_AUTH_MGMT = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: invalid auth management", EtcdError)
AUTH_OLD_REVISION = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old", AuthOldRevisionError)
# etcd 3.4 sends this one untranslated (code UNKNOWN, the auth package's own text); clients see exactly that.
NO_PASSWORD_USER = ErrorSpec(
    _C.UNKNOWN, "auth: authentication failed, password was given for no password user", EtcdError
)
# coord's own: user and role names are LMDB keys, whose length LMDB bounds (etcd has no such limit).
MAX_AUTH_NAME_BYTES = 400
NAME_TOO_LONG = ErrorSpec(
    _C.INVALID_ARGUMENT, f"coord: user or role name is longer than {MAX_AUTH_NAME_BYTES} bytes", EtcdError
)

_BY_MESSAGE: dict[str, ErrorSpec] = {
    spec.message: spec for spec in list(globals().values()) if isinstance(spec, ErrorSpec)
}


def error_from_status(code: grpc.StatusCode, details: str) -> EtcdError:
    """The typed exception for a status received from a server.

    Known etcd messages map to their own class; other UNAVAILABLE statuses to :class:`UnavailableError`; anything
    else to :class:`EtcdError`.
    """
    spec = _BY_MESSAGE.get(details)
    if spec is not None and spec.code == code:
        return spec.exception(code, details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(code, details)
    return EtcdError(code, details)
