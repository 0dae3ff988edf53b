"""The backend quota (``--quota-backend-bytes``): writes that would grow the store past it are refused with etcd's
"database space exceeded", and the NOSPACE alarm is raised for the member, as etcd does.

Only requests that can grow the store are checked (put, txn, lease grant); deletes, compactions and alarm
disarming always pass, so an operator can make room and disarm. The alarm itself is replicated through Raft like any
other request (coord.server.alarms applies it), so every member refuses writes until it is disarmed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import NO_SPACE
from coord.server.rejection import Rejected
from coord.server.requests import Kind
from coord.server.storage import Backend

log = logging.getLogger(__name__)

# Requests that can grow the store, checked against the backend quota before they are proposed.
_GROWING_KINDS = frozenset({Kind.PUT, Kind.TXN, Kind.LEASE_GRANT})
# How long a measure that says "room left" is trusted (measuring walks every database's page counts).
_MEASURE_TTL_S = 0.1


class QuotaGuard:
    """Checks log entry data against the quota before it is proposed.

    ``raise_alarm`` proposes the NOSPACE alarm for this member and returns once it is applied; it is called at most
    once at a time, in a task of its own, and its refusals (no leader, say) are logged: the next refused write
    tries again.
    """

    def __init__(self, backend: Backend, quota_bytes: int, raise_alarm: Callable[[], Awaitable[object]]) -> None:
        self._backend = backend
        self.quota_bytes = quota_bytes
        self._raise_alarm = raise_alarm
        self._alarm_task: asyncio.Task[None] | None = None
        self._size_in_use = 0
        self._measured_at = float("-inf")

    def check(self, data: bytes) -> None:
        """Raise Rejected(NO_SPACE), and raise the alarm, when ``data`` would take the store past the quota."""
        if not self._over(data):
            return
        self._alarm()
        raise Rejected(NO_SPACE)

    def _over(self, data: bytes) -> bool:
        if not self.quota_bytes or not data or (data[0] & 0x7F) not in _GROWING_KINDS:
            return False
        # Trust a recent measure while it says "room left"; near or over the quota, measure again (deletes and
        # compactions may just have made room).
        now = time.monotonic()
        if now - self._measured_at > _MEASURE_TTL_S or self._size_in_use + len(data) > self.quota_bytes:
            self._size_in_use = self._backend.size_in_use()
            self._measured_at = now
        return self._size_in_use + len(data) > self.quota_bytes

    def _alarm(self) -> None:
        if self._alarm_task is not None and not self._alarm_task.done():
            return

        async def raise_alarm() -> None:
            try:
                await self._raise_alarm()
                log.warning("backend quota of %d bytes exceeded: NOSPACE alarm raised", self.quota_bytes)
            except Rejected as refusal:
                log.warning("raising the NOSPACE alarm failed: %s", refusal.spec.message)

        self._alarm_task = asyncio.create_task(raise_alarm(), name="coord-nospace-alarm")


def nospace_request(member_id: int) -> rpc_pb2.AlarmRequest:
    """The request that raises the NOSPACE alarm for ``member_id``."""
    return rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=member_id, alarm=rpc_pb2.NOSPACE)
