"""The member-local part of leases: deadlines, expiry and TTL checkpoints.

Replicated state (:mod:`coord.server.lease.store`) changes only by applying log entries. Deadlines are not replicated:
every member tracks every lease, but only the Raft leader's deadlines mean anything. The leader renews leases on
keep-alive and expires a lease by proposing its revoke through the log, so every member deletes the attached keys at
the same revision.

A new leader cannot know how long ago the old one last heard from a client, so it gives every lease a fresh deadline
before expiring any: its remaining TTL plus an extension (the election timeout, time for the old leader to notice it
lost leadership), as etcd does. Without checkpoints the remaining TTL is the full TTL, and repeated leader changes
can keep a dead lease alive forever. With checkpoints (etcd's lease checkpointing, ``--lease-checkpoint-interval``),
the leader proposes, every interval, the remaining TTL of each lease whose TTL is longer than the interval; every
member stores it next to the granted TTL, and a new leader starts each lease at its checkpointed remaining TTL. A
keep-alive on a checkpointed lease proposes a checkpoint of 0 ("full TTL again"), so at most two checkpoint entries
per lease are written per interval however often it is renewed.

A new leader first proposes an empty checkpoint entry and waits until it is applied (a barrier: then every
checkpoint of earlier terms is applied too), and only then takes over expiry with deadlines from the stored
checkpoints (etcd promotes its lessor once the leader applied its first entry, for the same reason). Keep-alives in
between are honoured and win over the checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import LEASE_NOT_FOUND
from coord.server.lease.store import StoredLease
from coord.server.rejection import Rejected

log = logging.getLogger(__name__)

# Proposes a checkpoint entry through the log and returns once this member applied it; raises Rejected.
CheckpointProposer = Callable[[rpc_pb2.LeaseCheckpointRequest], Awaitable[object]]

DEFAULT_CHECKPOINT_INTERVAL_S = 300.0  # etcd's default: 5 minutes
_EXPIRE_PER_TICK = 500
_CHECKPOINT_BATCH = 1000  # checkpoints per log entry, as etcd's maxLeaseCheckpointBatchSize
_CHECKPOINT_RATE = 1000  # checkpoints per second at most, as etcd's leaseCheckpointRate
_REVOKE_RETRY_S = 1.0


def min_lease_ttl(election_timeout_ms: int) -> int:
    """etcd's floor on a lease TTL: 1.5 election timeouts, rounded up to whole seconds."""
    return max(1, math.ceil(1.5 * election_timeout_ms / 1000))


@dataclass(slots=True)
class _Lease:
    ttl: int
    expires_at: float
    # The remaining TTL the log holds for this lease as this member last knew it (0: none). Exact on the primary.
    checkpoint: int = 0
    revoking: bool = False


class Lessor:
    """Tracks lease deadlines on this member and, while it leads, expires leases (through ``revoke``) and
    checkpoints their remaining TTLs (through ``checkpoint``; None disables checkpoints).

    Usage (the member server wires it)::

        lessor = Lessor(revoke, checkpoint=propose_checkpoint, load=read_stored_leases, extend_seconds=1.0)
        lessor.restore(stored)   # on start and after installing a snapshot
        lessor.start()
        lessor.lead()            # this member became leader; lessor.demote() when it no longer is
        lessor.keep_alive(lease_id)

    ``load`` reads every stored lease (id -> StoredLease) from the store; ``clock`` is monotonic seconds. All methods
    run on the server's event loop and never raise, except :meth:`stop`'s cancellation.
    """

    def __init__(
        self,
        revoke: Callable[[int], Awaitable[object]],
        *,
        checkpoint: CheckpointProposer | None = None,
        load: Callable[[], dict[int, StoredLease]] | None = None,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        extend_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        tick_seconds: float = 0.25,
    ) -> None:
        if checkpoint_interval <= 0:
            raise ValueError("checkpoint_interval must be > 0")
        self._revoke = revoke
        self._checkpoint = checkpoint
        self._load = load
        self._interval = checkpoint_interval
        self._extend = extend_seconds
        self._clock = clock
        self._tick = tick_seconds
        self._leases: dict[int, _Lease] = {}
        # (deadline, lease id) for every deadline set while primary; stale entries are skipped when popped.
        self._expiry_heap: list[tuple[float, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # Bumped on every lead/demote: work started for an older leadership stops.
        self._generation = 0
        # Leases renewed since this member became leader, before it took over (they keep their new deadline).
        self._renewed: set[int] = set()
        self._clears: list[int] = []
        # The leadership generation whose clear-flusher is running (None: none runs). Per generation, so a flusher
        # of an earlier term still waiting on its proposal does not keep a new term's clears from being flushed.
        self._flusher_generation: int | None = None
        self.leading = False
        self.primary = False

    @property
    def checkpointing(self) -> bool:
        return self._checkpoint is not None

    # -- leadership ---------------------------------------------------------------------------------------------------

    def lead(self) -> None:
        """This member now leads: take over expiry once earlier checkpoints are applied (at once without
        checkpoints)."""
        self._generation += 1
        self.leading = True
        self.primary = False
        self._renewed.clear()
        self._expiry_heap.clear()
        if self._checkpoint is None:
            self._promote({})
            return
        self._spawn(self._settle(self._generation, self._checkpoint))

    def demote(self) -> None:
        """This member no longer leads: stop expiring and checkpointing (the new leader does)."""
        self._generation += 1
        self.leading = False
        self.primary = False
        self._renewed.clear()
        self._expiry_heap.clear()
        self._clears.clear()

    async def _settle(self, generation: int, checkpoint: CheckpointProposer) -> None:
        while generation == self._generation:
            try:
                await checkpoint(rpc_pb2.LeaseCheckpointRequest())
                break
            except Rejected as refusal:
                log.debug("lease checkpoint barrier: %s; retrying", refusal.spec.message)
                await asyncio.sleep(self._tick)
        if generation != self._generation:
            return
        self._promote(self._load() if self._load is not None else {})

    def _promote(self, stored: dict[int, StoredLease]) -> None:
        """Give every lease its deadline under this leader (checkpointed remaining TTL, or full TTL, plus the
        extension; leases renewed meanwhile keep theirs) and start expiring."""
        now = self._clock()
        for lease_id, known in stored.items():
            self._leases.setdefault(lease_id, _Lease(known.ttl, now + known.ttl))
        for lease_id, lease in self._leases.items():
            record = stored.get(lease_id)
            lease.checkpoint = record.remaining if record is not None and self.checkpointing else 0
            lease.revoking = False
            if lease_id in self._renewed:
                if lease.checkpoint:
                    self._queue_clear(lease_id, lease)
                continue
            start = record.starting_ttl if record is not None and self.checkpointing else lease.ttl
            lease.expires_at = now + self._extend + start
        self._renewed.clear()
        self._expiry_heap = [(lease.expires_at, lease_id) for lease_id, lease in self._leases.items()]
        heapq.heapify(self._expiry_heap)
        self.primary = True

    # -- replicated changes, as applied -------------------------------------------------------------------------------

    def restore(self, leases: dict[int, StoredLease]) -> None:
        """Track exactly ``leases`` (on start, and after a snapshot replaced the store), each with its full TTL from
        now; a leading member takes over again from the new state."""
        now = self._clock()
        self._leases = {lid: _Lease(rec.ttl, now + rec.ttl, rec.remaining) for lid, rec in leases.items()}
        if self.leading:
            self.lead()

    def on_granted(self, lease_id: int, ttl: int) -> None:
        lease = _Lease(ttl, self._clock() + ttl)
        self._leases[lease_id] = lease
        if self.primary:
            heapq.heappush(self._expiry_heap, (lease.expires_at, lease_id))

    def on_revoked(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)

    # -- client requests (served by the leader) -----------------------------------------------------------------------

    def keep_alive(self, lease_id: int) -> int:
        """Renew the lease to its full TTL; returns the TTL, or 0 when the lease does not exist (etcd's answer).

        A checkpointed lease gets its checkpoint cleared through the log, so a later leader does not start it at the
        old remaining TTL."""
        lease = self._leases.get(lease_id)
        if lease is None or lease.revoking:
            return 0
        lease.expires_at = self._clock() + lease.ttl
        if self.primary:
            heapq.heappush(self._expiry_heap, (lease.expires_at, lease_id))
            if lease.checkpoint:
                self._queue_clear(lease_id, lease)
            self._compact_heap()
        elif self.leading:
            self._renewed.add(lease_id)
        return lease.ttl

    def remaining(self, lease_id: int) -> tuple[int, int] | None:
        """(remaining whole seconds, granted TTL), or None for an unknown lease.

        Between becoming leader and taking over, a lease not renewed meanwhile answers the TTL it will start at."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return None
        if self.leading and not self.primary and lease_id not in self._renewed:
            start = lease.checkpoint if self.checkpointing and 0 < lease.checkpoint < lease.ttl else lease.ttl
            return int(start + self._extend), lease.ttl
        return max(0, int(lease.expires_at - self._clock())), lease.ttl

    def ids(self) -> list[int]:
        return list(self._leases)

    def listing_order(self, lease_ids: list[int]) -> list[int]:
        """``lease_ids`` in the order etcd's LeaseLeases lists them: soonest expiry first on the member that expires
        leases (ids of equal deadline, or unknown here, by id); by id elsewhere, where no deadline runs."""
        if not self.primary:
            return sorted(lease_ids)
        never = float("inf")

        def deadline(lease_id: int) -> tuple[float, int]:
            lease = self._leases.get(lease_id)
            return (lease.expires_at if lease is not None else never, lease_id)

        return sorted(lease_ids, key=deadline)

    # -- background work ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loops.append(asyncio.create_task(self._expire_loop(), name="coord-lease-expiry"))
        if self._checkpoint is not None:
            self._loops.append(asyncio.create_task(self._checkpoint_loop(), name="coord-lease-checkpoint"))

    async def stop(self) -> None:
        self._generation += 1
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _compact_heap(self) -> None:
        """Drop stale entries once they outnumber live leases (renewals push a new entry each)."""
        if len(self._expiry_heap) > 4 * len(self._leases) + 1024:
            self._expiry_heap = [(lease.expires_at, lid) for lid, lease in self._leases.items() if not lease.revoking]
            heapq.heapify(self._expiry_heap)

    def _due(self) -> list[int]:
        """Leases past their deadline (at most _EXPIRE_PER_TICK), marked as being revoked."""
        now = self._clock()
        heap = self._expiry_heap
        due: list[int] = []
        while heap and heap[0][0] <= now and len(due) < _EXPIRE_PER_TICK:
            _, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is None or lease.revoking or lease.expires_at > now:
                continue  # revoked, already being revoked, or renewed (a later entry stands for it)
            lease.revoking = True
            due.append(lease_id)
        return due

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            if self.primary:
                for lease_id in self._due():
                    self._spawn(self._expire(lease_id, self._generation))

    async def _expire(self, lease_id: int, generation: int) -> None:
        try:
            await self._revoke(lease_id)
        except Rejected as refusal:
            if refusal.spec is LEASE_NOT_FOUND:
                return
            log.warning("expiring lease %x failed: %s; will retry", lease_id, refusal.spec.message)
            lease = self._leases.get(lease_id)
            if lease is not None:
                lease.revoking = False
                if generation == self._generation and self.primary:
                    heapq.heappush(self._expiry_heap, (self._clock() + _REVOKE_RETRY_S, lease_id))

    # -- checkpoints --------------------------------------------------------------------------------------------------

    def _queue_clear(self, lease_id: int, lease: _Lease) -> None:
        """Propose (soon, batched) that ``lease_id`` has no checkpoint any more."""
        lease.checkpoint = 0
        self._clears.append(lease_id)
        if self._flusher_generation != self._generation and self._checkpoint is not None:
            self._flusher_generation = self._generation
            self._spawn(self._flush_clears(self._generation, self._checkpoint))

    async def _flush_clears(self, generation: int, checkpoint: CheckpointProposer) -> None:
        try:
            await asyncio.sleep(0)  # let the keep-alives already queued on the loop join this batch
            while self._clears and generation == self._generation:
                batch, self._clears = self._clears[:_CHECKPOINT_BATCH], self._clears[_CHECKPOINT_BATCH:]
                request = rpc_pb2.LeaseCheckpointRequest(
                    checkpoints=[rpc_pb2.LeaseCheckpoint(ID=lid, remaining_TTL=0) for lid in batch]
                )
                try:
                    await checkpoint(request)
                except Rejected as refusal:
                    # Lost with a leader change (the next leader may then start these leases at their old
                    # checkpoint, as etcd would) or timed out: retry while this member still leads.
                    log.debug("clearing %d lease checkpoints: %s", len(batch), refusal.spec.message)
                    if generation == self._generation:
                        self._clears[:0] = [lid for lid in batch if lid in self._leases]
                        await asyncio.sleep(self._tick)
        finally:
            if self._flusher_generation == generation:
                self._flusher_generation = None

    def checkpoint_candidates(self) -> list[int]:
        """Leases whose TTL is long enough to be checkpointed (longer than the interval), in no particular order."""
        return [lid for lid, lease in self._leases.items() if lease.ttl > self._interval and not lease.revoking]

    def _take_checkpoints(self, lease_ids: list[int]) -> list[rpc_pb2.LeaseCheckpoint]:
        """The checkpoints of ``lease_ids`` due now: remaining TTL (rounded up) below the granted TTL and different
        from the one the log holds. Records them as the log's (the caller proposes them at once)."""
        now = self._clock()
        checkpoints: list[rpc_pb2.LeaseCheckpoint] = []
        for lease_id in lease_ids:
            lease = self._leases.get(lease_id)
            if lease is None or lease.revoking:
                continue
            remaining = math.ceil(lease.expires_at - now)
            if remaining <= 0 or remaining >= lease.ttl or remaining == lease.checkpoint:
                continue
            lease.checkpoint = remaining
            checkpoints.append(rpc_pb2.LeaseCheckpoint(ID=lease_id, remaining_TTL=remaining))
        return checkpoints

    async def _checkpoint_loop(self) -> None:
        assert self._checkpoint is not None
        while True:
            await asyncio.sleep(self._interval)
            if self.primary:
                await self._checkpoint_all(self._generation, self._checkpoint)

    async def _checkpoint_all(self, generation: int, checkpoint: CheckpointProposer) -> None:
        """One round: checkpoint every candidate lease, in entries of at most _CHECKPOINT_BATCH, at most
        _CHECKPOINT_RATE per second. Each batch's remaining TTLs are computed just before it is proposed, so a
        keep-alive in between is never overwritten by an older remaining TTL."""
        candidates = self.checkpoint_candidates()
        for start in range(0, len(candidates), _CHECKPOINT_BATCH):
            if generation != self._generation or not self.primary:
                return
            batch = self._take_checkpoints(candidates[start : start + _CHECKPOINT_BATCH])
            if not batch:
                continue
            try:
                await checkpoint(rpc_pb2.LeaseCheckpointRequest(checkpoints=batch))
            except Rejected as refusal:
                log.debug("lease checkpoint of %d leases: %s", len(batch), refusal.spec.message)
                for item in batch:  # unknown outcome: make the next round propose them again
                    lease = self._leases.get(item.ID)
                    if lease is not None and lease.checkpoint == item.remaining_TTL:
                        lease.checkpoint = -1
                return
            await asyncio.sleep(len(batch) / _CHECKPOINT_RATE)
