"""Which failures are retried, and the retry behaviour the user can observe."""

from __future__ import annotations

import grpc
import pytest

import coord
from coord.client._retry import RetryKind, is_retryable, should_fail_over
from coord.errors import (
    DeadlineExceededError,
    EtcdError,
    InvalidAuthTokenError,
    NoLeaderError,
    UnavailableError,
    error_from_status,
)
from coord.testing import free_port
from tests.client.conftest import Backend

U = grpc.StatusCode.UNAVAILABLE
REFUSED = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host"


@pytest.mark.parametrize(
    ("err", "safe", "unsafe"),
    [
        (UnavailableError(U, REFUSED), True, True),  # never reached a server
        (error_from_status(U, "etcdserver: no leader"), True, True),  # refused before proposing
        (InvalidAuthTokenError(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token"), True, True),
        (UnavailableError(U, "Socket closed"), True, False),  # the request may have been applied
        (error_from_status(U, "etcdserver: leader changed"), True, False),
        (error_from_status(U, "etcdserver: request timed out"), True, False),
        (DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), False, False),
        (error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided"), False, False),
    ],
)
def test_retry_classification(err: EtcdError, safe: bool, unsafe: bool) -> None:
    assert is_retryable(err, RetryKind.SAFE) is safe
    assert is_retryable(err, RetryKind.UNSAFE) is unsafe


def test_fail_over_on_unavailable_and_deadline_only() -> None:
    assert isinstance(error_from_status(U, "etcdserver: no leader"), NoLeaderError)
    assert should_fail_over(UnavailableError(U, "x"))
    assert should_fail_over(DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, "x"))
    assert not should_fail_over(EtcdError(grpc.StatusCode.NOT_FOUND, "x"))


def test_write_skips_a_dead_first_endpoint(backend: Backend) -> None:
    # A put to an endpoint that refuses connections provably did not apply, so it moves on and succeeds once.
    backend.require("kv")
    dead = f"127.0.0.1:{free_port()}"
    with coord.connect([dead, backend.endpoint], timeout=5) as client:
        result = client.put("once", "v")
        assert client.endpoint == backend.endpoint
        kv = client.get("once").kv
        assert kv is not None and kv.version == 1 and kv.mod_revision == result.revision


def test_every_call_has_a_deadline() -> None:
    with coord.connect(f"127.0.0.1:{free_port()}", timeout=0.5) as client:
        with pytest.raises(EtcdError) as info:
            client.get("k")
        assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        with pytest.raises(EtcdError):
            client.put("k", "v", timeout=0.2)
