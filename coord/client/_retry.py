"""Which failures may be retried, and the tenacity policy that retries them.

Two kinds of call:

* ``SAFE``: reads and writes that are idempotent (range, status, revoke, compact, ...). Retried on any UNAVAILABLE
  status (transport failure, no leader, leader changed, timeout) until the call's deadline.
* ``UNSAFE``: writes that must not be applied twice (put, delete, txn with writes, lease grant). Retried only when
  the failure proves the server never applied the request: the connection could not be established at all, or etcd
  rejected it before proposing it (``no leader``, ``too many requests``, an invalid auth token).

Every call has a deadline: the retry loop stops when it is spent, and each attempt gets only the time left.
"""

from __future__ import annotations

import enum

import grpc

from coord.errors import (
    AuthOldRevisionError,
    DeadlineExceededError,
    EtcdError,
    InvalidAuthTokenError,
    NoLeaderError,
    TooManyRequestsError,
    UnavailableError,
)

__all__ = ["RetryKind", "is_retryable", "should_fail_over"]


class RetryKind(enum.Enum):
    SAFE = "safe"
    UNSAFE = "unsafe"


# Substrings of gRPC core's messages for a connection that was never established: the request did not leave.
_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    "connection refused",
    "failed to connect to remote host",
    "dns resolution failed",
    "name resolution failure",
    "connections to all backends failing",
)


# The server refused the credentials before doing anything: authenticate again, then repeat the call.
REAUTHENTICATE = (InvalidAuthTokenError, AuthOldRevisionError)


def not_sent(err: EtcdError) -> bool:
    """True when ``err`` proves the request was not applied by any server."""
    if isinstance(err, (NoLeaderError, TooManyRequestsError, *REAUTHENTICATE)):
        return True
    if err.code == grpc.StatusCode.UNAVAILABLE and not err.details.startswith("etcdserver:"):
        details = err.details.lower()
        return any(marker in details for marker in _NOT_SENT_MARKERS)
    return False


def is_retryable(err: BaseException, kind: RetryKind) -> bool:
    """Whether a failed attempt of a call of this kind may be repeated (possibly on another endpoint)."""
    if not isinstance(err, EtcdError):
        return False
    if kind is RetryKind.SAFE:
        return isinstance(err, (UnavailableError, *REAUTHENTICATE))
    return not_sent(err)


def should_fail_over(err: BaseException) -> bool:
    """Whether the endpoint that produced ``err`` should be abandoned for the next one."""
    return isinstance(err, UnavailableError | DeadlineExceededError) and not isinstance(err, TooManyRequestsError)
