"""The transport under every client call: endpoints, failover, deadlines, retries, TLS, keepalive, auth token.

One :class:`Transport` per client. It keeps one gRPC channel per endpoint (created lazily inside the client's event
loop) and a *current* endpoint. A call runs against the current endpoint; when an attempt fails in a way that says
the member is unreachable or unhealthy (UNAVAILABLE, DEADLINE_EXCEEDED), the transport moves to the next endpoint,
and the call is retried there if :mod:`coord.client._retry` says that is safe. Every call has a deadline (the
client's ``timeout`` unless overridden per call) that bounds all its attempts together.

With ``user``/``password``, the transport authenticates before the first call and sends the token as the ``token``
metadata entry; when a server answers ``invalid auth token`` (expired, or issued by a restarted member) or
``revision of auth store is old`` (users or roles changed since the token was issued) it authenticates again and
repeats the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypeVar

import grpc
import grpc.aio
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.client import _tracing
from coord.client._retry import REAUTHENTICATE, RetryKind, is_retryable, should_fail_over
from coord.errors import (
    ClientClosedError,
    DeadlineExceededError,
    EtcdError,
    error_from_status,
)

__all__ = ["Endpoint", "Metadata", "TLSConfig", "Transport", "rpc_error"]

log = logging.getLogger(__name__)

R = TypeVar("R")
Metadata: TypeAlias = tuple[tuple[str, str], ...]

DEFAULT_ENDPOINT = "127.0.0.1:2379"
REQUIRE_LEADER = ("hasleader", "true")  # etcd: refuse with "no leader" instead of waiting, when there is none
_MAX_ATTEMPTS = 12


def rpc_error(exc: grpc.aio.AioRpcError) -> EtcdError:
    """The typed coord error for a failed gRPC call."""
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(code, details)
    return error_from_status(code, details)


@dataclass(frozen=True)
class TLSConfig:
    """TLS material, as PEM file paths. ``ca_cert`` alone gives server verification; add ``cert`` and ``key`` for
    client-certificate authentication."""

    ca_cert: str | Path | None = None
    cert: str | Path | None = None
    key: str | Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(read(self.ca_cert), read(self.key), read(self.cert))


class Endpoint:
    """One member address with its channel and the service stubs bound to it."""

    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.watch = rpc_pb2_grpc.WatchStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.auth = rpc_pb2_grpc.AuthStub(channel)


def _normalise(address: str) -> str:
    for scheme in ("http://", "https://", "unix://"):
        if address.startswith(scheme):
            return address[len(scheme) :].rstrip("/")
    return address.rstrip("/")


class Transport:
    """Channels, failover and the retry loop shared by every service wrapper of one client."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        tls: TLSConfig | None,
        keepalive_time: float,
        keepalive_timeout: float,
        user: str | None,
        password: str | None,
    ) -> None:
        addresses = [_normalise(e) for e in endpoints if e.strip()]
        if not addresses:
            raise ValueError("at least one endpoint is required")
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.addresses = addresses
        self.timeout = timeout
        self._tls = tls
        self._options: list[tuple[str, int]] = [
            ("grpc.keepalive_time_ms", int(keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
        ]
        self._user = user
        self._password = password
        self._token: str | None = None
        self._auth_lock: asyncio.Lock | None = None
        self._current = 0
        self._endpoints: dict[str, Endpoint] = {}
        self.closed = False

    # --- endpoints -------------------------------------------------------------------------------------------

    @property
    def current_address(self) -> str:
        """The endpoint calls go to right now."""
        return self.addresses[self._current]

    def endpoint(self, address: str | None = None) -> Endpoint:
        """The endpoint for ``address`` (the current one when None), opening its channel on first use."""
        if self.closed:
            raise ClientClosedError("the client is closed")
        address = _normalise(address) if address is not None else self.current_address
        ep = self._endpoints.get(address)
        if ep is None:
            if self._tls is not None:
                channel = grpc.aio.secure_channel(address, self._tls.credentials(), options=self._options)
            else:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            ep = self._endpoints[address] = Endpoint(address, channel)
        return ep

    def fail_over(self, failed: Endpoint) -> None:
        """Move to the next endpoint, unless another failure already moved away from ``failed``."""
        if failed.address == self.current_address and len(self.addresses) > 1:
            self._current = (self._current + 1) % len(self.addresses)
            log.info("endpoint %s failed; switching to %s", failed.address, self.current_address)

    def set_addresses(self, addresses: Sequence[str]) -> None:
        """Replace the endpoint list (e.g. after a member change), keeping the current endpoint when still listed."""
        current = self.current_address
        new = [_normalise(a) for a in addresses]
        if not new:
            raise ValueError("at least one endpoint is required")
        self.addresses = new
        self._current = new.index(current) if current in new else 0

    # --- auth ------------------------------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """The current auth token (None without auth)."""
        return self._token

    def metadata(self, require_leader: bool = False) -> Metadata:
        """gRPC metadata for a call: the auth token, and etcd's require-leader flag."""
        token: Metadata = (("token", self._token),) if self._token else ()
        return (*token, REQUIRE_LEADER) if require_leader else token

    async def authenticate(self, ep: Endpoint, stale_token: str | None, deadline: float) -> None:
        """Get a fresh token, unless another task already replaced ``stale_token``. Raises AuthFailedError."""
        if self._user is None or self._password is None:
            return
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        async with self._auth_lock:
            if self._token is not None and self._token != stale_token:
                return
            remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
            with _tracing.span("authenticate", endpoint=ep.address):
                try:
                    resp = await ep.auth.Authenticate(
                        rpc_pb2.AuthenticateRequest(name=self._user, password=self._password), timeout=remaining
                    )
                except grpc.aio.AioRpcError as exc:
                    raise rpc_error(exc) from None
            self._token = resp.token

    # --- calls -----------------------------------------------------------------------------------------------

    async def call(
        self,
        op: str,
        attempt: Callable[[Endpoint, float, Metadata], Awaitable[R]],
        *,
        kind: RetryKind,
        timeout: float | None = None,
        address: str | None = None,
        require_leader: bool = False,
    ) -> R:
        """Run ``attempt(endpoint, seconds_left, metadata)`` under a span, a deadline and the retry policy.

        ``address`` pins the call to one member (no failover; still retried there when safe). ``require_leader``
        asks a member without a leader to refuse at once (``no leader``, provably not applied, so retried) rather
        than wait for an election it may not see end. Raises the typed
        :class:`~coord.errors.EtcdError` of the last attempt, or :class:`DeadlineExceededError` when the deadline
        is spent.
        """
        budget = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        with _tracing.span(op, retry=kind.value) as span:
            retrying = AsyncRetrying(
                stop=stop_after_delay(budget) | stop_after_attempt(_MAX_ATTEMPTS),
                wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
                retry=retry_if_exception(lambda e: is_retryable(e, kind)),
                reraise=True,
            )
            async for try_ in retrying:
                with try_:
                    ep = self.endpoint(address)
                    span.set_attribute("endpoint", ep.address)
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline of {budget}s spent")
                    if self._user is not None and self._token is None:
                        await self.authenticate(ep, None, deadline)
                    token = self._token
                    try:
                        return await attempt(ep, remaining, self.metadata(require_leader))
                    except grpc.aio.AioRpcError as exc:
                        err = rpc_error(exc)
                        if address is None and should_fail_over(err):
                            self.fail_over(ep)
                        if isinstance(err, REAUTHENTICATE):
                            await self.authenticate(ep, token, deadline)
                        raise err from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def close(self) -> None:
        """Close every channel; in-flight calls fail with ClientClosedError or CANCELLED."""
        self.closed = True
        endpoints, self._endpoints = list(self._endpoints.values()), {}
        for ep in endpoints:
            await ep.channel.close(None)
