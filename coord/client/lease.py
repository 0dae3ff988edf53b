"""Lease calls: grant, revoke, time_to_live, leases, keep_alive_once and the keep-alive loop. Mixed into
:class:`coord.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import grpc.aio

from coord._proto.etcdserverpb import rpc_pb2
from coord.client._channel import Endpoint, Metadata, Transport
from coord.client._retry import RetryKind
from coord.client.results import Header
from coord.errors import LEASE_NOT_FOUND, CoordError, LeaseNotFoundError, UnavailableError

__all__ = ["KeepAlive", "LeaseGrant", "LeaseInfo", "LeaseKeepAliveResult", "LeaseMixin"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A granted lease: its ID and the TTL the server actually granted (etcd raises small TTLs to its minimum)."""

    id: int
    ttl: int
    header: Header


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease's remaining ``ttl`` (-1 when the lease does not exist), its ``granted_ttl`` and attached keys."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...]
    header: Header


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResult:
    """One successful refresh: the lease has ``ttl`` seconds left from the moment the server answered."""

    id: int
    ttl: int
    header: Header


def _lease_gone(lease_id: int) -> LeaseNotFoundError:
    return LeaseNotFoundError(LEASE_NOT_FOUND.code, f"{LEASE_NOT_FOUND.message} (lease {lease_id:x})")


class LeaseMixin:
    _transport: Transport

    async def grant(self, ttl: int, *, lease_id: int = 0, timeout: float | None = None) -> LeaseGrant:
        """Create a lease of ``ttl`` seconds (``lease_id`` 0 lets the server choose the ID).

        Raises LeaseExistsError (ID taken), LeaseTTLTooLargeError, NoSpaceError.
        """
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.LeaseGrantResponse:
            return await ep.lease.LeaseGrant(request, timeout=left, metadata=md)

        resp = await self._transport.call(
            "lease_grant", attempt, kind=RetryKind.UNSAFE, timeout=timeout, require_leader=True
        )
        if resp.error:
            raise CoordError(f"lease grant failed: {resp.error}")
        return LeaseGrant(resp.ID, resp.TTL, Header.from_pb(resp.header))

    async def revoke(self, lease_id: int, *, timeout: float | None = None) -> Header:
        """Revoke a lease, deleting every key attached to it. Raises LeaseNotFoundError when it does not exist (also
        when a retried revoke had in fact been applied by the failed attempt)."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.LeaseRevokeResponse:
            return await ep.lease.LeaseRevoke(request, timeout=left, metadata=md)

        resp = await self._transport.call(
            "lease_revoke", attempt, kind=RetryKind.SAFE, timeout=timeout, require_leader=True
        )
        return Header.from_pb(resp.header)

    async def time_to_live(self, lease_id: int, *, keys: bool = False, timeout: float | None = None) -> LeaseInfo:
        """The remaining TTL of a lease (``ttl`` -1 when it does not exist); with ``keys``, the attached keys."""
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.LeaseTimeToLiveResponse:
            return await ep.lease.LeaseTimeToLive(request, timeout=left, metadata=md)

        resp = await self._transport.call(
            "lease_time_to_live", attempt, kind=RetryKind.SAFE, timeout=timeout, require_leader=True
        )
        return LeaseInfo(resp.ID, resp.TTL, resp.grantedTTL, tuple(resp.keys), Header.from_pb(resp.header))

    async def leases(self, *, timeout: float | None = None) -> list[int]:
        """The IDs of every live lease."""

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.LeaseLeasesResponse:
            return await ep.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=left, metadata=md)

        resp = await self._transport.call(
            "lease_leases", attempt, kind=RetryKind.SAFE, timeout=timeout, require_leader=True
        )
        return [lease.ID for lease in resp.leases]

    async def keep_alive_once(self, lease_id: int, *, timeout: float | None = None) -> LeaseKeepAliveResult:
        """Refresh a lease once. Raises LeaseNotFoundError when the lease has expired or was revoked."""
        request = rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.LeaseKeepAliveResponse:
            done = asyncio.Event()

            async def requests() -> AsyncIterator[rpc_pb2.LeaseKeepAliveRequest]:
                yield request
                await done.wait()  # keep the stream open until the answer is in (no half-close race)

            call = ep.lease.LeaseKeepAlive(requests(), timeout=left, metadata=md)
            try:
                async for resp in call:
                    return resp
            finally:
                done.set()
                call.cancel()
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "keep-alive stream closed without an answer")

        resp = await self._transport.call(
            "lease_keep_alive", attempt, kind=RetryKind.SAFE, timeout=timeout, require_leader=True
        )
        if resp.TTL <= 0:
            raise _lease_gone(lease_id)
        return LeaseKeepAliveResult(resp.ID, resp.TTL, Header.from_pb(resp.header))

    def keep_alive(self, lease_id: int, *, interval: float | None = None) -> KeepAlive:
        """Start refreshing a lease in the background (every ``interval`` seconds; default a third of its TTL).

        Returns a :class:`KeepAlive`: an async iterator of refresh results that raises LeaseNotFoundError when the
        lease is gone; ``await ka.close()`` stops refreshing (the lease then expires on its own).
        """
        return KeepAlive(self, lease_id, interval)


class KeepAlive:
    """A background loop refreshing one lease. Iterate it to observe refreshes; close it to stop.

    Transient failures are retried (on other endpoints) until the lease's last known TTL runs out; then, or when the
    server says the lease is gone, the loop ends and iteration raises LeaseNotFoundError.
    """

    def __init__(self, client: LeaseMixin, lease_id: int, interval: float | None) -> None:
        self.lease_id = lease_id
        self._client = client
        self._interval = interval
        self._results: asyncio.Queue[LeaseKeepAliveResult | BaseException | None] = asyncio.Queue(maxsize=16)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"coord-keepalive-{lease_id:x}")
        self.last: LeaseKeepAliveResult | None = None

    def _publish(self, item: LeaseKeepAliveResult | BaseException | None) -> None:
        if self._results.full():  # nobody is iterating: keep the newest results only
            self._results.get_nowait()
        self._results.put_nowait(item)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        expires = float("inf")
        try:
            while True:
                sent = loop.time()
                try:
                    result = await self._client.keep_alive_once(self.lease_id, timeout=min(5.0, expires - sent))
                except LeaseNotFoundError as exc:
                    self._publish(exc)
                    return
                except CoordError as exc:
                    if loop.time() >= expires:
                        self._publish(_lease_gone(self.lease_id))
                        return
                    log.warning("keep-alive of lease %x failed: %s", self.lease_id, exc)
                    await asyncio.sleep(0.2)
                    continue
                self.last = result
                expires = sent + result.ttl
                self._publish(result)
                await asyncio.sleep(self._interval if self._interval is not None else max(result.ttl / 3, 0.1))
        finally:
            self._publish(None)

    def __aiter__(self) -> AsyncIterator[LeaseKeepAliveResult]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[LeaseKeepAliveResult]:
        while True:
            item = await self._results.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        """Stop refreshing. Idempotent."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
