"""The watchable store: delivers every change to the watchers whose range it touches, in order, exactly once.

Each watcher has ``next_revision``: every change below it has been queued for the client, none at or above it has.
A watcher is either *synced* (it gets changes as they are applied) or *catching up* (it reads them from the MVCC
history in LMDB, in bounded chunks, until it reaches the current revision and joins the synced set). A watcher whose
stream has too many responses queued (a slow consumer) leaves the synced set and later catches up from history, so it
never blocks writes or other watchers and never loses an event. If compaction removes history it still needs, it is
canceled with ``compact_revision`` set, as etcd does.

Everything here runs on the server's event loop; history reads are short synchronous LMDB read transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.mvccpb import kv_pb2
from coord.server.mvcc.store import Event, MvccReader

log = logging.getLogger(__name__)

# A stream with this many responses queued is congested: its synced watchers fall back to history.
CONGESTED = 512
# Catching up resumes once the stream has drained below this.
DRAINED = 128
# Events read from history per step, so one watcher's catch-up never stalls the loop for long.
CATCH_UP_EVENTS = 1000

# Node.read: a context manager yielding a consistent view of the last committed state.
ReaderFactory = Callable[[], AbstractContextManager[MvccReader]]


@dataclass(eq=False)
class Watcher:
    id: int
    key: bytes
    end: bytes | None  # None: the single key; b"": every key >= key
    next_revision: int
    stream: WatchStream
    no_put: bool = False
    no_delete: bool = False
    prev_kv: bool = False
    fragment: bool = False
    progress_notify: bool = False
    synced: bool = False
    sent_since_progress: bool = False
    # Canceled by the server (its history was compacted). As in etcd, its id stays taken on the stream until the
    # client cancels it.
    canceled: bool = False

    def covers(self, key: bytes) -> bool:
        if self.end is None:
            return key == self.key
        return key >= self.key and (not self.end or key < self.end)

    def visible(self, events: list[Event]) -> list[kv_pb2.Event]:
        """The events of one revision this watcher gets, filtered, with prev_kv when asked.

        As etcd, prev_kv is the key as it was at the previous revision (etcd reads it at ``mod_revision - 1``): for
        a key changed twice in one txn (put, then deleted by a range) both events get the value from before the txn,
        and a put that creates the key (version 1) gets none."""
        out: list[kv_pb2.Event] = []
        before: dict[bytes, kv_pb2.KeyValue | None] = {}
        for event in events:
            key = event.kv.key
            if key not in before:
                before[key] = event.prev_kv
            if not self.covers(key):
                continue
            if (self.no_put and event.type == kv_pb2.Event.PUT) or (
                self.no_delete and event.type == kv_pb2.Event.DELETE
            ):
                continue
            prev = None
            if self.prev_kv and not (event.type == kv_pb2.Event.PUT and event.kv.version == 1):
                prev = before[key]
            out.append(kv_pb2.Event(type=event.type, kv=event.kv, prev_kv=prev))  # type: ignore[arg-type]
        return out


@dataclass(eq=False)
class WatchStream:
    """The responses of one gRPC Watch stream, in the order the client must see them."""

    hub: WatchHub
    queue: asyncio.Queue[rpc_pb2.WatchResponse | None] = field(default_factory=asyncio.Queue)
    watchers: dict[int, Watcher] = field(default_factory=dict)
    next_id: int = 0
    progress_wanted: bool = False

    @property
    def congested(self) -> bool:
        return self.queue.qsize() >= CONGESTED

    def send(self, response: rpc_pb2.WatchResponse) -> None:
        self.queue.put_nowait(response)

    async def next_response(self) -> rpc_pb2.WatchResponse | None:
        """The next response to write, or None when the stream is closed."""
        response = await self.queue.get()
        if self.queue.qsize() < DRAINED:
            self.hub.wake()
        return response

    def close(self) -> None:
        self.queue.put_nowait(None)


class WatchHub:
    """All watchers of a member. ``on_change`` must be registered as the node's change listener.

    ``fragment_bytes`` is the size from which a watcher created with ``fragment`` gets its events split over several
    responses (see :func:`fragments`); etcd uses its --max-request-bytes plus 512 KiB of gRPC overhead.
    """

    def __init__(
        self, read: ReaderFactory, header: Callable[[int], rpc_pb2.ResponseHeader], *, fragment_bytes: int
    ) -> None:
        self._read = read
        self._header = header
        self._fragment_bytes = fragment_bytes
        self._single: dict[bytes, set[Watcher]] = {}
        self._ranges: set[Watcher] = set()
        self._catching_up: set[Watcher] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._catch_up_loop(), name="coord-watch-catch-up")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        if self._catching_up:
            self._wakeup.set()

    def resync(self) -> None:
        """The store was replaced wholesale (a snapshot from the leader): every synced watcher catches up from
        history from its next revision, so none misses the changes the snapshot brought."""
        for group in list(self._single.values()):
            for watcher in list(group):
                self._leave_synced(watcher)
                self._catching_up.add(watcher)
        for watcher in list(self._ranges):
            self._leave_synced(watcher)
            self._catching_up.add(watcher)
        self.wake()

    def watcher_count(self) -> int:
        """Live watchers of every stream: synced or catching up (not those canceled by the server)."""
        return sum(len(group) for group in self._single.values()) + len(self._ranges) + len(self._catching_up)

    def current_revision(self) -> int:
        with self._read() as view:
            return view.current_revision

    # -- watchers --------------------------------------------------------------------------------------------------

    def open_stream(self) -> WatchStream:
        return WatchStream(self)

    def close_stream(self, stream: WatchStream) -> None:
        for watcher in list(stream.watchers.values()):
            self._forget(watcher)
        stream.watchers.clear()

    def create(self, stream: WatchStream, req: rpc_pb2.WatchCreateRequest) -> None:
        """Register a watcher and queue its ``created`` response (then, if it starts in the past, its history)."""
        current = self.current_revision()
        key = req.key or b"\x00"
        end: bytes | None = req.range_end or None
        if end == b"\x00":
            end = b""
        if end and key >= end:
            # etcd refuses an empty range (range_end <= key) before it looks at the id: no id is used up.
            stream.send(self._refusal(current, "mvcc: watcher range is empty"))
            return
        watch_id = req.watch_id
        if watch_id == 0:  # 0 asks the server to choose, as in etcd
            while stream.next_id in stream.watchers:
                stream.next_id += 1
            watch_id = stream.next_id
            stream.next_id += 1
        elif watch_id in stream.watchers:
            stream.send(self._refusal(current, "mvcc: duplicate watch ID provided on the WatchStream"))
            return
        filters = set(req.filters)
        watcher = Watcher(
            id=watch_id,
            key=key,
            end=end,
            next_revision=req.start_revision if req.start_revision != 0 else current + 1,
            stream=stream,
            no_put=rpc_pb2.WatchCreateRequest.NOPUT in filters,
            no_delete=rpc_pb2.WatchCreateRequest.NODELETE in filters,
            prev_kv=req.prev_kv,
            fragment=req.fragment,
            progress_notify=req.progress_notify,
        )
        stream.watchers[watch_id] = watcher
        stream.send(rpc_pb2.WatchResponse(header=self._header(current), watch_id=watch_id, created=True))
        if req.start_revision < 0:
            # etcd keeps a negative start: below the compact revision it is canceled as compacted, otherwise (never
            # compacted) its history read is empty and it watches from the present.
            with self._read() as view:
                compacted = req.start_revision < view.compact_revision
            if not compacted:
                watcher.next_revision = current + 1
        if watcher.next_revision > current:
            self._join_synced(watcher)
        else:
            self._catching_up.add(watcher)
            self._wakeup.set()

    def _refusal(self, current: int, reason: str) -> rpc_pb2.WatchResponse:
        """etcd's answer to a create it refuses: created and canceled at once, watch id -1."""
        return rpc_pb2.WatchResponse(
            header=self._header(current), watch_id=-1, created=True, canceled=True, cancel_reason=reason
        )

    def cancel(self, stream: WatchStream, watch_id: int) -> None:
        watcher = stream.watchers.pop(watch_id, None)
        if watcher is None:
            return  # etcd answers nothing for an unknown id
        self._forget(watcher)
        stream.send(
            rpc_pb2.WatchResponse(header=self._header(self.current_revision()), watch_id=watch_id, canceled=True)
        )

    def request_progress(self, stream: WatchStream) -> None:
        """Answer with the current revision once every watcher of the stream has been sent everything before it."""
        if any(not w.synced and not w.canceled for w in stream.watchers.values()):
            stream.progress_wanted = True
            return
        stream.send(rpc_pb2.WatchResponse(header=self._header(self.current_revision()), watch_id=-1))

    def progress_tick(self) -> None:
        """Send a progress notification to every synced watcher that asked for them and got nothing since the last
        tick (etcd's progress_notify)."""
        watchers = [w for ws in self._single.values() for w in ws] + list(self._ranges)
        if not watchers:
            return
        header = self._header(self.current_revision())
        for watcher in watchers:
            if watcher.progress_notify and not watcher.sent_since_progress:
                response = rpc_pb2.WatchResponse(watch_id=watcher.id)
                response.header.CopyFrom(header)
                watcher.stream.send(response)
            watcher.sent_since_progress = False

    def _join_synced(self, watcher: Watcher) -> None:
        watcher.synced = True
        if watcher.end is None:
            self._single.setdefault(watcher.key, set()).add(watcher)
        else:
            self._ranges.add(watcher)

    def _leave_synced(self, watcher: Watcher) -> None:
        watcher.synced = False
        if watcher.end is None:
            group = self._single.get(watcher.key)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del self._single[watcher.key]
        else:
            self._ranges.discard(watcher)

    def _forget(self, watcher: Watcher) -> None:
        self._leave_synced(watcher)
        self._catching_up.discard(watcher)

    # -- delivery --------------------------------------------------------------------------------------------------

    def on_change(self, revision: int, events: list[Event]) -> None:
        """Node change listener: queue the changes of ``revision`` for every synced watcher they concern."""
        touched: set[Watcher] = set()
        for event in events:
            touched.update(self._single.get(event.kv.key, ()))
        for watcher in self._ranges:
            if any(watcher.covers(event.kv.key) for event in events):
                touched.add(watcher)
        # Watchers with the same range and options get the same events: build their response once (the hot path
        # of a fan-out to many watchers of one prefix) and give each a copy with its own id.
        shared: dict[tuple[bytes, bytes | None, bool, bool, bool], rpc_pb2.WatchResponse | None] = {}
        header: rpc_pb2.ResponseHeader | None = None
        for watcher in touched:
            if watcher.next_revision > revision:
                continue  # already delivered from history
            if watcher.stream.congested:
                # Slow consumer: stop buffering for it; it will read this revision from history later.
                log.info("watcher %d is slow at revision %d; it will catch up from history", watcher.id, revision)
                self._leave_synced(watcher)
                self._catching_up.add(watcher)
                continue
            watcher.next_revision = revision + 1
            if watcher.fragment:
                self._send_events(watcher, revision, watcher.visible(events))
                continue
            signature = (watcher.key, watcher.end, watcher.no_put, watcher.no_delete, watcher.prev_kv)
            if signature in shared:
                template = shared[signature]
            else:
                visible = watcher.visible(events)
                if visible and header is None:
                    header = self._header(revision)
                template = shared[signature] = rpc_pb2.WatchResponse(header=header, events=visible) if visible else None
            if template is None:
                continue
            response = rpc_pb2.WatchResponse()
            response.CopyFrom(template)
            response.watch_id = watcher.id
            watcher.sent_since_progress = True
            watcher.stream.send(response)

    def _send_events(self, watcher: Watcher, header_revision: int, events: list[kv_pb2.Event]) -> None:
        if not events:
            return
        watcher.sent_since_progress = True
        response = rpc_pb2.WatchResponse(header=self._header(header_revision), watch_id=watcher.id, events=events)
        if not watcher.fragment:
            watcher.stream.send(response)
            return
        for part in fragments(response, self._fragment_bytes):
            watcher.stream.send(part)

    async def _catch_up_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            progressed = True
            while self._catching_up and progressed:
                progressed = False
                for watcher in list(self._catching_up):
                    if watcher.stream.congested or watcher not in self._catching_up:
                        continue
                    self._catch_up_step(watcher)
                    progressed = True
                    await asyncio.sleep(0)  # let writes and other streams run between chunks

    def _catch_up_step(self, watcher: Watcher) -> None:
        """Queue one bounded chunk of history for ``watcher``; join the synced set once it reaches the present."""
        with self._read() as reader:
            current = reader.current_revision
            if watcher.next_revision < reader.compact_revision:
                self._forget(watcher)
                watcher.canceled = True
                # As etcd: the header carries revision 0 and there is no cancel reason; compact_revision says why.
                watcher.stream.send(
                    rpc_pb2.WatchResponse(
                        header=self._header(0),
                        watch_id=watcher.id,
                        canceled=reader.compact_revision != 0,  # etcd: canceled means compact_revision != 0
                        compact_revision=reader.compact_revision,
                    )
                )
                self._answer_progress(watcher.stream, current)
                return
            groups, next_revision = reader.history(watcher.next_revision, current, CATCH_UP_EVENTS)
        events: list[kv_pb2.Event] = []
        for _, changes in groups:
            events.extend(watcher.visible(changes))
        last = next_revision - 1
        self._send_events(watcher, last, events)
        watcher.next_revision = next_revision
        if next_revision > current:
            self._catching_up.discard(watcher)
            self._join_synced(watcher)
            self._answer_progress(watcher.stream, current)

    def _answer_progress(self, stream: WatchStream, current: int) -> None:
        """Answer a deferred progress request once no watcher of the stream is catching up any more."""
        if stream.progress_wanted and all(w.synced or w.canceled for w in stream.watchers.values()):
            stream.progress_wanted = False
            stream.send(rpc_pb2.WatchResponse(header=self._header(current), watch_id=-1))


def fragments(response: rpc_pb2.WatchResponse, limit: int) -> list[rpc_pb2.WatchResponse]:
    """``response`` as etcd sends it to a watcher created with ``fragment``: whole when it is under ``limit`` bytes
    encoded or holds fewer than two events; else split in order into responses with the same header and watch id,
    each under ``limit`` bytes unless a single event is larger, all but the last marked ``fragment``."""
    if len(response.events) < 2 or response.ByteSize() < limit:
        return [response]
    empty = rpc_pb2.WatchResponse(header=response.header, watch_id=response.watch_id, fragment=True)
    base = empty.ByteSize()
    parts: list[list[kv_pb2.Event]] = [[]]
    size = base
    for event in response.events:
        grown = _field_bytes(event.ByteSize())
        if parts[-1] and size + grown >= limit:
            parts.append([])
            size = base
        parts[-1].append(event)
        size += grown
    out = []
    for i, events in enumerate(parts):
        part = rpc_pb2.WatchResponse()
        part.CopyFrom(empty)
        part.events.extend(events)
        part.fragment = i < len(parts) - 1
        out.append(part)
    return out


def _field_bytes(length: int) -> int:
    """Encoded size of a length-delimited field with a one-byte tag (``events`` is field 11) holding ``length``."""
    return 1 + max(1, (length.bit_length() + 6) // 7) + length
