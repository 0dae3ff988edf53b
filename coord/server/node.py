"""The member's server loop: it drives the Raft node, persists, sends, applies, and resolves waiters.

The write path (DESIGN.md): a request is encoded as a log entry and proposed to Raft (a follower forwards it to the
leader inside Raft). The loop takes every input queued since the last round (ticks, peer messages, proposals,
ReadIndex requests), steps the Raft node, and handles its ``Ready`` in the order the Raft core documents:

1. on the commit thread, ONE LMDB write transaction: the received snapshot (if any), the new log entries and hard
   state, and the committed entries applied to the state machine with the applied index; one fsync (group commit:
   everything queued while the previous transaction ran goes into the next one);
2. only then the messages are sent to peers;
3. listeners (watchers, lessor) are told, proposers are answered, ReadIndex waiters whose index is applied are let in;
4. ``advance``.

Threading: LMDB write transactions run on one dedicated thread (the commit thread) so the event loop keeps accepting
requests while the disk syncs. Reads open their own read-only transactions and never wait for the writer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from google.protobuf.message import Message

from coord.errors import LEADER_CHANGED, NO_LEADER, REQUEST_TIMEOUT, STOPPED, ErrorSpec
from coord.server.applier import Applied, Applier, Result
from coord.server.membership import Member, load_members
from coord.server.mvcc import Event, MvccReader
from coord.server.peer.snapshot import install_state
from coord.server.quota import QuotaGuard, nospace_request
from coord.server.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MessageType,
    ProposalDropped,
    RawNode,
    Ready,
    SnapshotMetadata,
    StateRole,
)
from coord.server.raft import (
    Message as RaftMessage,
)
from coord.server.reads import ReadQueue
from coord.server.rejection import Rejected
from coord.server.requests import Kind, encode
from coord.server.storage import Backend
from coord.server.storage.backend import from_u64
from coord.server.storage.log import LogEntry
from coord.server.storage.raft_storage import RaftStorage

log = logging.getLogger(__name__)

_TRIM_PER_BATCH = 1_000
_MAX_CATCH_UP_ENTRIES = 5_000
# Proposals waiting in one loop turn go to Raft as one message of at most this many bytes (one larger entry goes alone),
# the size of one append message.
_PROPOSAL_BATCH_BYTES = 1 << 20
# What a leader sends before its round is on disk (see _handle_ready).
_LEADER_EARLY = frozenset({MessageType.APP, MessageType.HEARTBEAT})

# Called on the event loop with (revision, events) for every applied change, in revision order.
ChangeListener = Callable[[int, list[Event]], None]
# Called on the event loop with the leases granted (id, TTL) or revoked (id, 0) by an applied entry.
LeaseListener = Callable[[list[tuple[int, int]]], None]
# Called on the event loop with (leader id, this member leads) whenever the known leader changes.
LeaderListener = Callable[[int, bool], None]
# Called on the event loop after the member table changed (membership entry applied, or snapshot installed).
MembersListener = Callable[[dict[int, Member]], None]


@dataclass(slots=True)
class NodeOptions:
    heartbeat_ms: int = 100
    election_ms: int = 1000
    snapshot_count: int = 10_000
    min_lease_ttl: int = 2
    # How long a request waits for its entry to be applied, or for a ReadIndex, before "request timed out".
    request_timeout_s: float = 7.0
    # --quota-backend-bytes: writes that would grow the store past it raise the NOSPACE alarm (0: no quota).
    quota_bytes: int = 0


@dataclass(slots=True)
class _Round:
    """What one Ready needs from the commit thread, and what it gave back."""

    entries: list[Entry]
    hard_state: HardState | None
    snapshot: SnapshotMetadata | None
    snapshot_path: Path | None
    committed: list[Entry]
    compact_to: int
    compact_conf: ConfState | None
    # Whether the commit must be on disk before messages go out: new entries, a new term or vote, a snapshot (Raft's
    # rule). Otherwise the round only applies entries already durable in the log, and a power loss may undo it.
    must_sync: bool = True
    applied: list[Applied] = field(default_factory=list)
    conf_changes: list[tuple[int, ConfChange]] = field(default_factory=list)
    members_changed: bool = False
    compacted: SnapshotMetadata | None = None


class Node:
    """Owns the Raft node, the log, the applier and the commit thread of one member."""

    def __init__(self, backend: Backend, member_id: int, options: NodeOptions | None = None) -> None:
        self.backend = backend
        self.member_id = member_id
        self.options = options or NodeOptions()
        self.storage = RaftStorage(backend)
        self.storage.snapshot_source = self._snapshot_source
        self._applier = Applier(backend, self.options.min_lease_ttl)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coord-commit")
        self.raw: RawNode | None = None
        self.transport: _TransportLike | None = None
        self.term = self.storage.hard_state.term
        self.leader_id = 0
        self.role = StateRole.FOLLOWER
        self.leader_changes = 0
        self.proposals_failed = 0
        with backend.read() as txn:
            self.applied_index = self._applier.applied_index(txn)
            self.members = load_members(backend, txn)
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._leader_known = asyncio.Event()
        self._stopping = False
        self._ticks = 0
        self._inbox: list[RaftMessage] = []
        self._proposals: list[tuple[int, bytes, asyncio.Future[Result]]] = []
        self._conf_proposals: list[tuple[ConfChange, asyncio.Future[ConfState | Rejected]]] = []
        self._conf_waiters: list[tuple[ConfChange, asyncio.Future[ConfState | Rejected]]] = []
        self._restore_listeners: list[Callable[[], None]] = []
        self._waiters: dict[int, asyncio.Future[Result]] = {}
        self._reads = ReadQueue()
        self._snapshot_reports: list[tuple[int, bool]] = []
        self._unreachable: set[int] = set()
        self._transfer_to = 0
        self._conf_history: list[tuple[int, ConfState]] = []
        self._listeners: list[ChangeListener] = []
        self._lease_listeners: list[LeaseListener] = []
        self._leader_listeners: list[LeaderListener] = []
        self._members_listeners: list[MembersListener] = []
        self.removed = asyncio.Event()
        # Set when the Raft loop failed (an I/O error, a bug): the member can no longer make progress and must exit.
        self.halted = asyncio.Event()
        self.quota = QuotaGuard(backend, self.options.quota_bytes, self._raise_nospace)
        # Request ids: the member's low 16 bits, then a counter seeded from the clock, as etcd does.
        seed = (int(time.time() * 1000) & 0xFF_FFFF_FFFF) << 8
        self._ids = itertools.count(((member_id & 0xFFFF) << 48) | seed)

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    async def start(self, transport: _TransportLike) -> None:
        """Start the Raft node from the stored state (the caller bootstrapped it, or it waits to join)."""
        self.transport = transport
        ticks = max(2, self.options.election_ms // self.options.heartbeat_ms)
        config = Config(id=self.member_id, election_tick=ticks, heartbeat_tick=1, pre_vote=True, check_quorum=True)
        self.raw = RawNode(config, self.storage)
        self._clean_spool()
        voters = self.storage.snap.conf_state.voters
        if voters == [self.member_id] and not self.storage.snap.conf_state.learners:
            self.raw.campaign()  # a single voter need not wait an election timeout
        else:
            # Fast-forward to just before the first election timeout, as etcd does on start.
            for _ in range(ticks - 1):
                self.raw.tick()
        self._task = asyncio.create_task(self._run(), name="coord-node")
        self._ticker = asyncio.create_task(self._tick_loop(), name="coord-node-ticker")
        self._wakeup.set()

    async def stop(self) -> None:
        """Finish the round being committed, refuse everything still waiting, and stop the commit thread."""
        self._stopping = True
        self._wakeup.set()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._task is not None:
            await self._task
        self._fail_everything(STOPPED)
        self._executor.shutdown(wait=True)

    # -- listeners ---------------------------------------------------------------------------------------------------

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(revision, events)`` on the event loop after every write that changed the store.

        Listeners see every revision exactly once, in order, before the writers' callers are answered. A listener
        must not block; it must not raise (an exception is logged and the listener stays registered).
        """
        self._listeners.append(listener)

    def add_lease_listener(self, listener: LeaseListener) -> None:
        """Call ``listener(changes)`` on the event loop after every entry that granted or revoked leases."""
        self._lease_listeners.append(listener)

    def add_leader_listener(self, listener: LeaderListener) -> None:
        """Call ``listener(leader_id, is_me)`` on the event loop whenever the known leader changes."""
        self._leader_listeners.append(listener)

    def add_members_listener(self, listener: MembersListener) -> None:
        self._members_listeners.append(listener)

    # -- requests ----------------------------------------------------------------------------------------------------

    @property
    def pending_proposals(self) -> int:
        """Proposals made on this member and not applied (or refused) yet."""
        return len(self._waiters)

    @property
    def is_leader(self) -> bool:
        return self.role == StateRole.LEADER

    def next_id(self) -> int:
        """A fresh id, unique on this member (request ids; positive 63-bit lease ids are derived from it)."""
        return next(self._ids)

    def encode(self, kind: Kind, request: Message) -> tuple[int, bytes]:
        """A fresh request id and the log entry data for ``request``."""
        request_id = next(self._ids)
        return request_id, encode(kind, request_id, request)

    async def propose(self, request_id: int, data: bytes) -> Message:
        """Replicate the request and wait until this member applied it; returns its response.

        Raises :class:`Rejected` when the request is refused by the store, or with etcd's retryable errors: no
        leader (none elected within the wait), request timed out (the entry was not applied in time: it may or may
        not be applied later), or stopping.
        """
        self.quota.check(data)
        await self._wait_for_leader()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiters[request_id] = future
        self._proposals.append((request_id, data, future))
        self._wakeup.set()
        # One timer instead of wait_for(shield(...)): this is every write's hot path. A caller that goes away cancels
        # the future; a proposal not yet handed to Raft is then dropped, one already handed over may still apply.
        timer = loop.call_later(self.options.request_timeout_s, self._time_out, future)
        try:
            result = await future
        finally:
            timer.cancel()
            self._waiters.pop(request_id, None)
        if isinstance(result, Rejected):
            raise result
        return result

    async def _raise_nospace(self) -> Message:
        return await self.propose(*self.encode(Kind.ALARM, nospace_request(self.member_id)))

    def _time_out(self, future: asyncio.Future[Result]) -> None:
        """The request was not applied in time: answer "request timed out" (it may still be applied later)."""
        if not future.done():
            self.proposals_failed += 1
            future.set_result(Rejected(REQUEST_TIMEOUT))

    async def propose_conf_change(self, cc: ConfChange) -> ConfState:
        """Replicate a membership change; returns the membership once it is applied here (raises like
        :meth:`propose`)."""
        await self._wait_for_leader()
        future: asyncio.Future[ConfState | Rejected] = asyncio.get_running_loop().create_future()
        self._conf_proposals.append((cc, future))
        self._wakeup.set()
        try:
            conf = await asyncio.wait_for(asyncio.shield(future), self.options.request_timeout_s)
        except TimeoutError:
            raise Rejected(REQUEST_TIMEOUT) from None
        if isinstance(conf, Rejected):
            raise conf
        return conf

    async def read_barrier(self) -> None:
        """Wait until this member applied everything committed before the call (ReadIndex through the leader), so
        a read that follows is linearizable. Raises Rejected (no leader, leader changed, request timed out)."""
        await self._wait_for_leader()
        future = self._reads.add()
        self._wakeup.set()
        # The same single timer as propose (every linearizable read comes here); the queue skips finished futures.
        timer = asyncio.get_running_loop().call_later(self.options.request_timeout_s, _read_timed_out, future)
        try:
            await future
        finally:
            timer.cancel()

    async def transfer_leadership(self, transferee: int) -> None:
        """Ask Raft to hand leadership to ``transferee`` (this member must lead); returns once it leads, or raises
        Rejected(REQUEST_TIMEOUT)."""
        self._transfer_to = transferee
        self._wakeup.set()
        deadline = time.monotonic() + self.options.request_timeout_s
        while self.leader_id != transferee:
            if time.monotonic() > deadline:
                raise Rejected(REQUEST_TIMEOUT)
            await asyncio.sleep(self.options.heartbeat_ms / 1000)

    @contextmanager
    def read(self) -> Iterator[MvccReader]:
        """A consistent read-only view of the last applied state."""
        with self.backend.read() as txn:
            yield MvccReader(self.backend, txn)

    async def _wait_for_leader(self) -> None:
        if self._stopping:
            raise Rejected(STOPPED)
        if self.leader_id:
            return
        try:
            await asyncio.wait_for(self._leader_known.wait(), 3 * self.options.election_ms / 1000)
        except TimeoutError:
            raise Rejected(NO_LEADER) from None

    # -- peer inputs -------------------------------------------------------------------------------------------------

    def receive(self, messages: list[RaftMessage]) -> None:
        """Messages from a peer, stepped in order in the next round."""
        self._inbox.extend(messages)
        self._wakeup.set()

    def report_snapshot(self, peer_id: int, ok: bool) -> None:
        self._snapshot_reports.append((peer_id, ok))
        self._wakeup.set()

    def report_unreachable(self, peer_id: int) -> None:
        self._unreachable.add(peer_id)
        self._wakeup.set()

    def spool_dir(self) -> Path:
        return self.backend.path.parent / "snap"

    # -- the loop ----------------------------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        interval = self.options.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self._ticks += 1
            self._wakeup.set()

    async def _run(self) -> None:
        raw = self.raw
        assert raw is not None
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                self._step_inputs(raw)
                while raw.has_ready() and not self._stopping:
                    await self._handle_ready(raw, raw.ready())
            except Exception:
                log.exception("the Raft loop failed; stopping this member")
                self._stopping = True
                self._fail_everything(STOPPED)
                self.halted.set()
                return

    def _step_inputs(self, raw: RawNode) -> None:
        ticks, self._ticks = self._ticks, 0
        for _ in range(min(ticks, 100)):
            raw.tick()
        inbox, self._inbox = self._inbox, []
        for message in inbox:
            try:
                raw.step(message)
            except Exception:
                log.exception("dropping a malformed message from %x", message.from_)
        for peer in self._unreachable:
            raw.report_unreachable(peer)
        self._unreachable.clear()
        reports, self._snapshot_reports = self._snapshot_reports, []
        for peer, ok in reports:
            raw.report_snapshot(peer, ok)
        if self._transfer_to:
            raw.transfer_leader(self._transfer_to)
            self._transfer_to = 0
        proposals, self._proposals = self._proposals, []
        batch: list[tuple[int, bytes, asyncio.Future[Result]]] = []
        size = 0
        for proposal in proposals:
            if proposal[2].done():
                continue
            if batch and size + len(proposal[1]) > _PROPOSAL_BATCH_BYTES:
                self._propose_batch(raw, batch)
                batch, size = [], 0
            batch.append(proposal)
            size += len(proposal[1])
        self._propose_batch(raw, batch)
        conf_proposals, self._conf_proposals = self._conf_proposals, []
        for cc, conf_future in conf_proposals:
            if conf_future.done():
                continue
            try:
                raw.propose_conf_change(cc)
            except ProposalDropped as dropped:
                conf_future.set_result(Rejected(_dropped_spec(dropped)))
            else:
                # Resolved when an entry with this change is applied (see _resolve_conf_changes).
                self._conf_waiters.append((cc, conf_future))
        ctx = self._reads.take_pending()
        if ctx is not None:
            try:
                raw.read_index(ctx)
            except ProposalDropped as dropped:
                self._reads.refuse(ctx, Rejected(_dropped_spec(dropped)))

    def _propose_batch(self, raw: RawNode, batch: list[tuple[int, bytes, asyncio.Future[Result]]]) -> None:
        """Hand the waiting proposals to Raft as one message (one append and one broadcast, or one forward)."""
        if not batch:
            return
        try:
            raw.propose_batch([data for _, data, _ in batch])
        except ProposalDropped as dropped:
            refusal = Rejected(_dropped_spec(dropped))
            for request_id, _, future in batch:
                self.proposals_failed += 1
                future.set_result(refusal)
                self._waiters.pop(request_id, None)

    async def _handle_ready(self, raw: RawNode, rd: Ready) -> None:
        loop = asyncio.get_running_loop()
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.lead, rd.soft_state.role)
        snapshot_meta = rd.snapshot.metadata if rd.snapshot is not None else None
        snapshot_path = Path(rd.snapshot.data.decode()) if rd.snapshot is not None and rd.snapshot.data else None
        round_ = _Round(
            entries=rd.entries,
            hard_state=rd.hard_state,
            snapshot=snapshot_meta,
            snapshot_path=snapshot_path,
            committed=rd.committed_entries,
            compact_to=0,
            compact_conf=None,
            must_sync=rd.must_sync or rd.snapshot is not None,
        )
        self._plan_compaction(raw, round_)
        messages = rd.messages
        if messages and self.transport is not None and self.role == StateRole.LEADER:
            # Raft thesis 10.2.1: the leader may replicate its new entries while it writes them to its own disk.
            # Safe here because no follower's answer is stepped before this round is persisted (this loop is
            # sequential), so the leader's own copy counts towards a commit only once it is on disk. Only appends
            # and heartbeats go early; anything else waits for the disk as the Ready contract says.
            early = [m for m in messages if m.type in _LEADER_EARLY]
            if early:
                self.transport.send(early)
                messages = [m for m in messages if m.type not in _LEADER_EARLY]
        if rd.entries or rd.hard_state is not None or rd.snapshot is not None or rd.committed_entries:
            await loop.run_in_executor(self._executor, self._commit, round_)
            self.storage.persisted(rd.entries, rd.hard_state, snapshot_meta)
            if round_.compacted is not None:
                self.storage.compacted(round_.compacted)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
        if messages and self.transport is not None:
            self.transport.send(messages)
        if snapshot_meta is not None:
            self._after_snapshot_install(snapshot_meta)
        for index, cc in round_.conf_changes:
            conf_state = raw.apply_conf_change(cc)
            self._conf_history.append((index, conf_state))
        self._publish(round_.applied)
        if round_.members_changed or snapshot_meta is not None:
            self._on_members_changed()
        self._resolve_conf_changes(round_)
        for rs in rd.read_states:
            self._reads.confirmed(rs.request_ctx, rs.index)
        self._reads.release(self.applied_index)
        raw.advance(rd)

    def _on_soft_state(self, lead: int, role: StateRole) -> None:
        changed = lead != self.leader_id
        was_leader = self.role == StateRole.LEADER
        self.role = role
        self.leader_id = lead
        if lead:
            self._leader_known.set()
        else:
            self._leader_known.clear()
        if changed or was_leader != (role == StateRole.LEADER):
            if changed:
                self.leader_changes += 1
                self._reads.leader_changed()
            log.info("leader is now %x (this member %s)", lead, "leads" if role == StateRole.LEADER else role.name)
            for listener in self._leader_listeners:
                try:
                    listener(lead, role == StateRole.LEADER)
                except Exception:
                    log.exception("leader listener %r failed", listener)

    def _plan_compaction(self, raw: RawNode, round_: _Round) -> None:
        """Every snapshot-count applied entries, move the compaction point, keeping some entries for slow
        followers (etcd keeps 5,000)."""
        applied = raw.raft.log.applied
        catch_up = min(_MAX_CATCH_UP_ENTRIES, self.options.snapshot_count)
        point = applied - catch_up
        if point - self.storage.snap.index < self.options.snapshot_count or point <= self.storage.snap.index:
            return
        round_.compact_to = point
        round_.compact_conf = self._conf_at(point)

    def _conf_at(self, index: int) -> ConfState:
        conf = self.storage.snap.conf_state
        for at, cs in self._conf_history:
            if at > index:
                break
            conf = cs
        return conf

    def _snapshot_source(self) -> SnapshotMetadata:
        """What a snapshot sent now covers: everything this loop has applied (the data sent is at least that)."""
        raw = self.raw
        assert raw is not None
        applied = raw.raft.log.applied
        conf = raw.raft.conf_state()
        return SnapshotMetadata(conf_state=conf, index=applied, term=self.storage.term(applied))

    def _commit(self, round_: _Round) -> None:
        """On the commit thread: persist and apply one Ready in one LMDB write transaction: made durable (two
        flushes) when the round must sync, else committed with one flush (see Backend.write)."""
        with self.backend.write(durable=round_.must_sync) as txn:
            if round_.snapshot is not None and round_.snapshot_path is not None:
                install_state(self.backend, txn, round_.snapshot_path)
            self.storage.persist(txn, round_.entries, round_.hard_state, round_.snapshot)
            applied = self._applier.applied_index(txn)
            for entry in round_.committed:
                if entry.type == EntryType.CONF_CHANGE:
                    cc = ConfChange.decode(entry.data)
                    round_.conf_changes.append((entry.index, cc))
                    if entry.index > applied:
                        self._applier.apply_conf_change(txn, entry.index, cc)
                        round_.members_changed = True
                    continue
                if entry.index <= applied:
                    continue  # already in the state machine (replay after restart, or copied by a snapshot)
                if not entry.data:
                    self._applier.mark_applied(txn, entry.index)
                    continue
                result = self._applier.apply(txn, LogEntry(entry.index, entry.term, 0, entry.data))
                if result.members_changed:
                    round_.members_changed = True
                round_.applied.append(result)
            if round_.compact_to:
                assert round_.compact_conf is not None
                round_.compacted = self.storage.compact(txn, round_.compact_to, round_.compact_conf)
                self.storage.snap, saved = round_.compacted, self.storage.snap
                try:
                    self.storage.trim(txn, _TRIM_PER_BATCH)
                finally:
                    self.storage.snap = saved
            elif self.storage.snap.index:
                self.storage.trim(txn, _TRIM_PER_BATCH // 10)
            self.applied_index = self._applier.applied_index(txn)
        if round_.snapshot_path is not None:
            with suppress(OSError):
                os.unlink(round_.snapshot_path)

    def _after_snapshot_install(self, meta: SnapshotMetadata) -> None:
        self._conf_history = []
        log.info("installed a snapshot at index %d (state machine applied index %d)", meta.index, self.applied_index)
        for listener in self._restore_listeners:
            try:
                listener()
            except Exception:
                log.exception("restore listener %r failed", listener)

    def add_restore_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after the state machine was replaced by a snapshot from the leader."""
        self._restore_listeners.append(listener)

    def _publish(self, results: list[Applied]) -> None:
        for applied in results:
            if applied.events:
                for listener in self._listeners:
                    try:
                        listener(applied.revision, applied.events)
                    except Exception:
                        log.exception("change listener %r failed at revision %d", listener, applied.revision)
            if applied.lease_changes:
                for lease_listener in self._lease_listeners:
                    lease_listener(applied.lease_changes)
        for applied in results:
            future = self._waiters.get(applied.request_id)
            if future is not None and not future.done():
                future.set_result(applied.result)

    def _on_members_changed(self) -> None:
        with self.backend.read() as txn:
            self.members = load_members(self.backend, txn)
        if self.member_id not in self.members and self.storage.snap.index and self.applied_index > 1:
            removed = all(self.member_id not in ids for ids in (self._current_conf().voters,))
            if removed and self.member_id not in self._current_conf().learners:
                log.warning("this member was removed from the cluster")
                self.removed.set()
        for listener in self._members_listeners:
            try:
                listener(dict(self.members))
            except Exception:
                log.exception("members listener %r failed", listener)

    def _current_conf(self) -> ConfState:
        assert self.raw is not None
        return self.raw.raft.conf_state()

    def _resolve_conf_changes(self, round_: _Round) -> None:
        if not self._conf_waiters or not round_.conf_changes:
            return
        remaining: list[tuple[ConfChange, asyncio.Future[ConfState | Rejected]]] = []
        for cc, future in self._conf_waiters:
            if any(c.encode() == cc.encode() for _, c in round_.conf_changes):
                if not future.done():
                    future.set_result(self._current_conf())
            else:
                remaining.append((cc, future))
        self._conf_waiters = remaining

    def _fail_everything(self, spec: ErrorSpec) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_result(Rejected(spec))
        self._waiters.clear()
        for _, _, future in self._proposals:
            if not future.done():
                future.set_result(Rejected(spec))
        self._proposals.clear()
        for _, conf_future in [*self._conf_proposals, *self._conf_waiters]:
            if not conf_future.done():
                conf_future.set_result(Rejected(spec))
        self._conf_proposals.clear()
        self._conf_waiters = []
        self._reads.fail_all(spec)

    def _clean_spool(self) -> None:
        spool = self.spool_dir()
        if spool.is_dir():
            for leftover in spool.iterdir():
                with suppress(OSError):
                    leftover.unlink()

    def raft_status(self) -> tuple[int, int, int]:
        """(term, commit index, applied index) as Raft knows them."""
        assert self.raw is not None
        r = self.raw.raft
        return r.term, r.log.committed, r.log.applied

    def stored_cluster_id(self) -> int:
        with self.backend.read() as txn:
            raw = txn.get(b"cluster_id", db=self.backend.meta)
        return from_u64(raw) if raw else 0

    # -- maintenance: exclusive use of the store (coord.server.defrag) ----------------------------------------------

    @asynccontextmanager
    async def writes_paused(self) -> AsyncIterator[None]:
        """Hold the commit thread for the duration of the block: once entered, no LMDB write transaction runs (the
        round being committed finishes first; later rounds wait, so Raft does not advance on this member) until the
        block exits, however it exits. Raises Rejected(STOPPED) when the node is stopping."""
        if self._stopping:
            raise Rejected(STOPPED)
        loop = asyncio.get_running_loop()
        parked: asyncio.Future[None] = loop.create_future()
        release = threading.Event()

        def mark_parked() -> None:
            if not parked.done():
                parked.set_result(None)

        def park() -> None:
            loop.call_soon_threadsafe(mark_parked)
            release.wait()

        try:
            loop.run_in_executor(self._executor, park)
        except RuntimeError:  # the commit thread was shut down
            raise Rejected(STOPPED) from None
        try:
            await parked
            yield
        finally:
            release.set()


class _TransportLike(Protocol):
    """What the node needs from the peer transport (see ``coord.server.peer.transport.Transport``)."""

    def send(self, messages: list[RaftMessage]) -> None:
        """Hand messages over for delivery; never blocks, may drop (Raft retries)."""
        ...


def _read_timed_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(Rejected(REQUEST_TIMEOUT))


def _dropped_spec(dropped: ProposalDropped) -> ErrorSpec:
    if dropped.reason == ProposalDropped.REASON_NO_LEADER:
        return NO_LEADER
    if dropped.reason == ProposalDropped.REASON_TRANSFERRING:
        return LEADER_CHANGED
    return REQUEST_TIMEOUT
