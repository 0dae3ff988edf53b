"""Watch: an async iterator of :class:`WatchEvent` that survives member failures and compaction.

Guarantees (what :class:`Watcher` adds to etcd's per-stream guarantees):

* **Resumes**: the watcher remembers the next revision it needs. When its stream fails (member killed, no leader,
  network error) it fails over to the next endpoint and re-creates the watch from that revision, so no event is
  missed; events below that revision are dropped, so none is repeated.
* **Compaction**: when the revision it needs has been compacted away, it re-reads the watched range and delivers the
  difference (see :attr:`WatchEvent.resynced`) instead of silently skipping, then continues from the read's
  revision. To compute deletions it tracks the set of keys that exist in the range (seeded by one keys-only read at
  creation). With ``no_put`` / ``no_delete`` filters that set cannot be tracked; such a watcher raises
  :class:`~coord.errors.WatchCanceledError` on compaction instead.
* **Progress**: ``progress_notify=True`` makes the server send idle notifications; :attr:`Watcher.revision` is the
  revision up to which every event has been received, and :meth:`Watcher.request_progress` asks for it now.

Events are buffered without bound while the consumer is slow; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from coord._proto.etcdserverpb import rpc_pb2
from coord.client import _tracing
from coord.client._channel import Endpoint, Metadata, Transport, rpc_error
from coord.client._retry import RetryKind
from coord.client.results import GetResult, KeyValue, WatchEvent, WatchEventType
from coord.client.txn import KeyLike, key_range
from coord.errors import (
    DeadlineExceededError,
    FutureRevisionError,
    InvalidAuthTokenError,
    UnavailableError,
    WatchCanceledError,
)

__all__ = ["WatchCallback", "Watcher"]

log = logging.getLogger(__name__)

WatchCallback = Callable[[WatchEvent], Awaitable[None] | None]

_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
}


# Cancel reasons that describe the member, not the watch: resume elsewhere.
_TRANSIENT_REASONS = {"etcdserver: no leader", "etcdserver: leader changed", "etcdserver: server stopped"}


class _Transient(Exception):
    """The member canceled the watch for a reason of its own; resume on the next endpoint."""


class _Compacted(Exception):
    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision


class Watcher:
    """A running watch on one key or range. Use ``async for event in watcher``; ``await watcher.cancel()`` (or
    ``async with``) to stop. Created by :meth:`coord.AsyncClient.watch`, which returns once the server confirmed the
    watch: every change after :attr:`start_revision` - 1 will be delivered.

    Iteration raises WatchCanceledError when the server cancels the watch for a reason other than a failure (for
    example permission denied), and CompactedError when ``start_revision`` - 1 was already compacted at creation.
    """

    def __init__(
        self,
        transport: Transport,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify: bool = False,
    ) -> None:
        self._transport = transport
        self._key, self._range_end = key_range(key, range_end, prefix=prefix, from_key=from_key)
        self._prev_kv = prev_kv
        self._filters: list[rpc_pb2.WatchCreateRequest.FilterType] = []
        if no_put:
            self._filters.append(rpc_pb2.WatchCreateRequest.NOPUT)
        if no_delete:
            self._filters.append(rpc_pb2.WatchCreateRequest.NODELETE)
        self._progress_notify = progress_notify
        self._next_rev = start_revision  # 0 until known
        self.start_revision = start_revision
        self._known: set[bytes] | None = None if self._filters else set()
        self._events: asyncio.Queue[WatchEvent | BaseException | None] = asyncio.Queue()
        self._created: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress_waiters: list[asyncio.Future[int]] = []
        self._requests: asyncio.Queue[rpc_pb2.WatchRequest | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.callback_task: asyncio.Task[None] | None = None  # set when created by add_watch_callback
        self._closed = False

    @property
    def revision(self) -> int:
        """Every event with a revision <= this one has been received (buffered or delivered)."""
        return self._next_rev - 1

    async def _start(self, timeout: float) -> None:
        with _tracing.span("watch_create", key=self._key.decode(errors="replace")):
            if self._known is not None:
                await self._seed(timeout)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="coord-watch")
            try:
                await asyncio.wait_for(asyncio.shield(self._created), timeout)
            except TimeoutError:
                await self.cancel()
                raise DeadlineExceededError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"watch not created within {timeout}s"
                ) from None
            except BaseException:
                await self.cancel()
                raise

    async def _seed(self, timeout: float) -> None:
        # The keys that exist just before the first delivered revision: the base for computing deletions after a
        # compaction. Without a start revision the read also fixes it (read at R, watch from R + 1).
        request = rpc_pb2.RangeRequest(
            key=self._key, range_end=self._range_end, keys_only=True, revision=max(self._next_rev - 1, 0)
        )

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.RangeResponse:
            return await ep.kv.Range(request, timeout=left, metadata=md)

        try:
            result = GetResult.from_pb(
                await self._transport.call("range", attempt, kind=RetryKind.SAFE, timeout=timeout, require_leader=True)
            )
        except FutureRevisionError:
            # Watching from a future revision: the range's state just before it is not known yet, so this watcher
            # cannot compute a re-sync difference; on compaction it raises WatchCanceledError instead.
            self._known = None
            return
        self._known = {kv.key for kv in result.kvs}
        if self._next_rev <= 0:
            self._next_rev = self.start_revision = result.revision + 1

    # --- the background loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        try:
            while not self._closed:
                ep = self._transport.endpoint()
                started = loop.time()
                try:
                    await self._stream(ep)
                except _Compacted as exc:
                    try:
                        await self._resync(exc.compact_revision)
                    except (UnavailableError, DeadlineExceededError) as read_error:
                        # The re-read failed on every endpoint for now: reopen (compacted again) and retry.
                        log.info("watch re-sync read failed (%s); retrying", read_error)
                    else:
                        backoff = 0.05
                        continue
                except _Transient as exc:
                    log.info("watch on %s canceled (%s); resuming at revision %d", ep.address, exc, self._next_rev)
                    self._transport.fail_over(ep)
                except grpc.aio.AioRpcError as exc:
                    err = rpc_error(exc)
                    if isinstance(err, InvalidAuthTokenError):
                        await self._transport.authenticate(ep, self._transport.token, loop.time() + 5)
                    elif exc.code() not in _TRANSIENT:
                        raise err from None
                    log.info("watch stream on %s failed (%s); resuming at revision %d", ep.address, err, self._next_rev)
                    self._transport.fail_over(ep)
                if loop.time() - started > 5:
                    backoff = 0.05
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced to the consumer, never swallowed
            if not self._created.done():
                self._created.set_exception(exc)
            else:
                self._events.put_nowait(exc)
        finally:
            self._events.put_nowait(None)
            for waiter in self._progress_waiters:
                if not waiter.done():
                    waiter.cancel()

    async def _stream(self, ep: Endpoint) -> None:
        create = rpc_pb2.WatchCreateRequest(
            key=self._key,
            range_end=self._range_end,
            start_revision=max(self._next_rev, 0),
            progress_notify=self._progress_notify,
            filters=self._filters,
            prev_kv=self._prev_kv,
        )
        requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        requests.put_nowait(rpc_pb2.WatchRequest(create_request=create))
        self._requests = requests

        async def request_stream() -> AsyncIterator[rpc_pb2.WatchRequest]:
            while (item := await requests.get()) is not None:
                yield item

        metadata = self._transport.metadata(require_leader=True)
        call = ep.watch.Watch(request_stream(), metadata=metadata)
        try:
            async for resp in call:
                self._on_response(resp)
        finally:
            self._requests = None
            requests.put_nowait(None)
            call.cancel()

    def _on_response(self, resp: rpc_pb2.WatchResponse) -> None:
        if resp.canceled:
            if resp.compact_revision:
                raise _Compacted(resp.compact_revision)
            if resp.cancel_reason in _TRANSIENT_REASONS:
                raise _Transient(resp.cancel_reason)
            raise WatchCanceledError(resp.cancel_reason or "watch canceled by the server")
        if resp.created:
            if self._next_rev <= 0:
                self._next_rev = self.start_revision = resp.header.revision + 1
            if not self._created.done():
                self._created.set_result(None)
        if resp.events:
            floor = self._next_rev
            for pb in resp.events:
                if pb.kv.mod_revision < floor:
                    continue  # already delivered before a reconnect
                event = WatchEvent.from_pb(pb)
                self._track(event)
                self._events.put_nowait(event)
                self._next_rev = max(self._next_rev, event.revision + 1)
        elif not resp.created:
            # A progress notification: every event up to the header revision has been sent.
            self._next_rev = max(self._next_rev, resp.header.revision + 1)
            waiters, self._progress_waiters = self._progress_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(resp.header.revision)

    def _track(self, event: WatchEvent) -> None:
        if self._known is None:
            return
        if event.type is WatchEventType.PUT:
            self._known.add(event.key)
        else:
            self._known.discard(event.key)

    async def _resync(self, compact_revision: int) -> None:
        if self._known is None:
            raise WatchCanceledError(
                f"revision {self._next_rev} was compacted (at {compact_revision}) and a filtered watch cannot re-sync",
                compact_revision,
            )
        with _tracing.span("watch_resync", compact_revision=compact_revision):
            request = rpc_pb2.RangeRequest(key=self._key, range_end=self._range_end)

            async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.RangeResponse:
                return await ep.kv.Range(request, timeout=left, metadata=md)

            result = GetResult.from_pb(
                await self._transport.call("range", attempt, kind=RetryKind.SAFE, require_leader=True)
            )
        now = {kv.key: kv for kv in result.kvs}
        changed = sorted((kv for kv in result.kvs if kv.mod_revision >= self._next_rev), key=lambda kv: kv.mod_revision)
        events = [WatchEvent(WatchEventType.PUT, kv, None, resynced=True) for kv in changed]
        gone = sorted(self._known - now.keys())
        events += [
            WatchEvent(WatchEventType.DELETE, KeyValue(key, b"", 0, result.revision, 0, 0), None, resynced=True)
            for key in gone
        ]
        self._known = set(now)
        for event in events:
            self._events.put_nowait(event)
        self._next_rev = result.revision + 1
        log.warning("watch re-synced after compaction at %d: %d changes", compact_revision, len(events))

    # --- consumer API ----------------------------------------------------------------------------------------

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchEvent:
        item = await self._events.get()
        if item is None:
            self._events.put_nowait(None)  # stay exhausted
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._events.put_nowait(None)
            raise item
        return item

    async def request_progress(self, timeout: float | None = None) -> int:
        """Ask the server for a progress notification; returns the revision up to which events have been received.

        Raises DeadlineExceededError when no notification arrives in time (e.g. the stream is reconnecting).
        """
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._progress_waiters.append(waiter)
        if self._requests is not None:
            self._requests.put_nowait(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        budget = self._transport.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(waiter, budget)
        except TimeoutError:
            raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, "no progress notification") from None

    async def cancel(self) -> None:
        """Stop the watch; pending buffered events can still be iterated, then iteration ends. Idempotent."""
        self._closed = True
        if self.callback_task is not None and self.callback_task is not asyncio.current_task():
            self.callback_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.callback_task
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        else:
            self._events.put_nowait(None)

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()


async def run_callback(
    watcher: Watcher, callback: WatchCallback, on_error: Callable[[BaseException], Any] | None
) -> None:
    """Deliver every event of ``watcher`` to ``callback`` in order (awaiting it when it returns an awaitable).

    When the watch fails, or the callback raises, delivery stops and the exception goes to ``on_error`` (awaited
    when it returns an awaitable; logged when there is none).
    """
    try:
        async for event in watcher:
            result = callback(event)
            if inspect.isawaitable(result):
                await result
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if on_error is None:
            log.error("watch callback stopped: %s", exc)
        else:
            result = on_error(exc)
            if inspect.isawaitable(result):
                await result
