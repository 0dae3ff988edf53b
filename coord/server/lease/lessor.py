"""Leases: the replicated part (grant, revoke, which keys are attached) and the member-local part (deadlines).

Replicated state lives in LMDB and changes only by applying log entries: ``leases`` maps a lease id to its granted
TTL, and the MVCC store keeps the lease -> keys table. Deadlines are not replicated: the member that expires leases
(a single member, later the Raft leader) tracks them in memory, renews them on keep-alive, and expires a lease by
proposing its revoke through the log, so every member deletes the attached keys at the same revision. On start-up
(and, with Raft, on becoming leader) every lease gets its full TTL again before anything can expire, so a restart
never expires a lease early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import LEASE_EXISTS, LEASE_NOT_FOUND, LEASE_TTL_TOO_LARGE
from coord.server.mvcc import MvccWriter
from coord.server.rejection import Rejected
from coord.server.storage.backend import Backend, from_i64, i64

log = logging.getLogger(__name__)

MAX_LEASE_TTL = 9_000_000_000  # seconds, as etcd
_EXPIRE_PER_TICK = 500


def min_lease_ttl(election_timeout_ms: int) -> int:
    """etcd's floor on a lease TTL: 1.5 election timeouts, rounded up to whole seconds."""
    return max(1, math.ceil(1.5 * election_timeout_ms / 1000))


# -- replicated state (called by the applier inside its LMDB write transaction) --------------------------------------


def lease_exists(backend: Backend, txn: Any, lease_id: int) -> bool:
    return txn.get(i64(lease_id), db=backend.leases) is not None


def apply_grant(backend: Backend, txn: Any, req: rpc_pb2.LeaseGrantRequest, min_ttl: int) -> rpc_pb2.LeaseGrantResponse:
    """Grant ``req.ID`` (chosen by the proposer) with ``req.TTL`` raised to the minimum; refuses a TTL above the maximum
    and an id in use."""
    if req.TTL > MAX_LEASE_TTL:
        raise Rejected(LEASE_TTL_TOO_LARGE)
    if lease_exists(backend, txn, req.ID):
        raise Rejected(LEASE_EXISTS)
    ttl = max(req.TTL, min_ttl)
    txn.put(i64(req.ID), i64(ttl), db=backend.leases)
    return rpc_pb2.LeaseGrantResponse(ID=req.ID, TTL=ttl)


def apply_revoke(backend: Backend, writer: MvccWriter, txn: Any, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
    """Delete the lease and every key attached to it, all in the writer's one revision."""
    if not lease_exists(backend, txn, lease_id):
        raise Rejected(LEASE_NOT_FOUND)
    for key in writer.lease_keys(lease_id):
        writer.delete_range(key, None)
    txn.delete(i64(lease_id), db=backend.leases)
    return rpc_pb2.LeaseRevokeResponse()


def stored_leases(backend: Backend, txn: Any) -> dict[int, int]:
    """Every granted lease: id -> granted TTL."""
    with txn.cursor(db=backend.leases) as cursor:
        return {from_i64(k): from_i64(v) for k, v in cursor}


# -- member-local deadlines -------------------------------------------------------------------------------------------


@dataclass
class _Deadline:
    ttl: int
    expires_at: float
    revoking: bool = False


class Lessor:
    """Tracks lease deadlines on this member and, while it is the primary (the Raft leader), expires leases by
    proposing revokes (through ``revoke``).

    Every member tracks every lease (grants and revokes arrive by applying the log), but only the primary's
    deadlines mean anything: keep-alives are served by the leader. On promotion every lease gets its full TTL again
    before anything can expire (a new leader cannot know how long the old one last heard from a client).
    ``clock`` is monotonic seconds. All methods run on the server's event loop.
    """

    def __init__(
        self,
        revoke: Callable[[int], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
        tick_seconds: float = 0.25,
    ) -> None:
        self._revoke = revoke
        self._clock = clock
        self._tick = tick_seconds
        self._deadlines: dict[int, _Deadline] = {}
        self._task: asyncio.Task[None] | None = None
        self._expiring: set[asyncio.Task[None]] = set()
        self.primary = False

    def promote(self) -> None:
        """This member now leads: give every lease its full TTL from now, then start expiring."""
        now = self._clock()
        for deadline in self._deadlines.values():
            deadline.expires_at = now + deadline.ttl
            deadline.revoking = False
        self.primary = True

    def demote(self) -> None:
        """This member no longer leads: stop expiring (the new leader does)."""
        self.primary = False

    def restore(self, leases: dict[int, int]) -> None:
        """Start tracking ``leases`` (id -> TTL), each with its full TTL from now."""
        now = self._clock()
        self._deadlines = {lid: _Deadline(ttl, now + ttl) for lid, ttl in leases.items()}

    def on_granted(self, lease_id: int, ttl: int) -> None:
        self._deadlines[lease_id] = _Deadline(ttl, self._clock() + ttl)

    def on_revoked(self, lease_id: int) -> None:
        self._deadlines.pop(lease_id, None)

    def keep_alive(self, lease_id: int) -> int:
        """Renew the lease to its full TTL; returns the TTL, or 0 when the lease does not exist (etcd's answer)."""
        deadline = self._deadlines.get(lease_id)
        if deadline is None or deadline.revoking:
            return 0
        deadline.expires_at = self._clock() + deadline.ttl
        return deadline.ttl

    def remaining(self, lease_id: int) -> tuple[int, int] | None:
        """(remaining whole seconds, granted TTL), or None for an unknown lease."""
        deadline = self._deadlines.get(lease_id)
        if deadline is None:
            return None
        return max(0, int(deadline.expires_at - self._clock())), deadline.ttl

    def ids(self) -> list[int]:
        return list(self._deadlines)

    def start(self) -> None:
        self._task = asyncio.create_task(self._expire_loop(), name="coord-lease-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expired(self) -> list[int]:
        now = self._clock()
        return [lid for lid, d in self._deadlines.items() if d.expires_at <= now and not d.revoking]

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            if not self.primary:
                continue
            for lease_id in self.expired()[:_EXPIRE_PER_TICK]:
                self._deadlines[lease_id].revoking = True
                task = asyncio.create_task(self._expire(lease_id))
                self._expiring.add(task)
                task.add_done_callback(self._expiring.discard)

    async def _expire(self, lease_id: int) -> None:
        try:
            await self._revoke(lease_id)
        except Rejected as refusal:
            if refusal.spec is not LEASE_NOT_FOUND:
                log.warning("expiring lease %x failed: %s; will retry", lease_id, refusal.spec.message)
                deadline = self._deadlines.get(lease_id)
                if deadline is not None:
                    deadline.revoking = False
