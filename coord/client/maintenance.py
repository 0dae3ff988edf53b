"""Maintenance calls: status, hash_kv, snapshot, defragment, alarms, move_leader. Mixed into
:class:`coord.AsyncClient`.

Calls about one member (status, hash_kv, defragment, snapshot) take an ``endpoint``: the member to ask (no
failover then); by default the current endpoint answers.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from coord._proto.etcdserverpb import rpc_pb2
from coord.client._channel import Endpoint, Metadata, Transport
from coord.client._retry import RetryKind
from coord.client.results import Header
from coord.errors import CoordError

__all__ = ["Alarm", "AlarmType", "HashKV", "MaintenanceMixin", "Status"]


@dataclass(frozen=True, slots=True)
class Status:
    """One member's view: its version, database size, the leader's ID, Raft positions and errors."""

    header: Header
    version: str
    db_size: int
    db_size_in_use: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: tuple[str, ...]
    is_learner: bool

    @property
    def member_id(self) -> int:
        return self.header.member_id


@dataclass(frozen=True, slots=True)
class HashKV:
    header: Header
    hash: int
    compact_revision: int


class AlarmType(enum.Enum):
    NONE = rpc_pb2.NONE
    NOSPACE = rpc_pb2.NOSPACE
    CORRUPT = rpc_pb2.CORRUPT


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    type: AlarmType


class MaintenanceMixin:
    _transport: Transport

    async def status(self, *, endpoint: str | None = None, timeout: float | None = None) -> Status:
        """The status of one member (``endpoint``, default the current one)."""

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.StatusResponse:
            return await ep.maintenance.Status(rpc_pb2.StatusRequest(), timeout=left, metadata=md)

        r = await self._transport.call("status", attempt, kind=RetryKind.SAFE, timeout=timeout, address=endpoint)
        return Status(
            Header.from_pb(r.header), r.version, r.dbSize, r.dbSizeInUse, r.leader, r.raftIndex, r.raftTerm,
            r.raftAppliedIndex, tuple(r.errors), r.isLearner,
        )  # fmt: skip

    async def hash_kv(self, revision: int = 0, *, endpoint: str | None = None, timeout: float | None = None) -> HashKV:
        """The hash of one member's MVCC store up to ``revision`` (0 = latest); equal on every healthy member."""

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.HashKVResponse:
            return await ep.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=left, metadata=md)

        r = await self._transport.call("hash_kv", attempt, kind=RetryKind.SAFE, timeout=timeout, address=endpoint)
        return HashKV(Header.from_pb(r.header), r.hash, r.compact_revision)

    async def defragment(self, *, endpoint: str | None = None, timeout: float | None = None) -> Header:
        """Defragment one member's backend (blocks that member while it runs)."""

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.DefragmentResponse:
            return await ep.maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=left, metadata=md)

        r = await self._transport.call("defragment", attempt, kind=RetryKind.SAFE, timeout=timeout, address=endpoint)
        return Header.from_pb(r.header)

    async def snapshot(self, path: str | Path, *, endpoint: str | None = None, timeout: float | None = None) -> int:
        """Stream one member's backend into ``path``; returns the number of bytes written.

        The file appears only complete: data goes to ``path.part``, is fsynced, then renamed. Raises CoordError when
        the stream ends early.
        """
        target = Path(path)
        part = target.with_name(target.name + ".part")

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> int:
            written = 0
            remaining = -1
            with open(part, "wb") as out:
                async for chunk in ep.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=left, metadata=md):
                    out.write(chunk.blob)
                    written += len(chunk.blob)
                    remaining = chunk.remaining_bytes
                out.flush()
                os.fsync(out.fileno())
            if remaining != 0:
                raise CoordError(f"snapshot stream ended early ({remaining} bytes missing)")
            return written

        try:
            written = await self._transport.call(
                "snapshot", attempt, kind=RetryKind.SAFE, timeout=timeout, address=endpoint
            )
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        return written

    async def alarms(self, *, timeout: float | None = None) -> list[Alarm]:
        """Every active alarm in the cluster."""
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.AlarmResponse:
            return await ep.maintenance.Alarm(request, timeout=left, metadata=md)

        r = await self._transport.call("alarm_list", attempt, kind=RetryKind.SAFE, timeout=timeout)
        return [Alarm(a.memberID, AlarmType(a.alarm)) for a in r.alarms]

    async def disarm(self, alarm: Alarm, *, timeout: float | None = None) -> list[Alarm]:
        """Clear one alarm (after fixing its cause: compact + defragment for NOSPACE); returns what was cleared."""
        request = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=alarm.member_id, alarm=alarm.type.value
        )

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.AlarmResponse:
            return await ep.maintenance.Alarm(request, timeout=left, metadata=md)

        r = await self._transport.call("alarm_disarm", attempt, kind=RetryKind.SAFE, timeout=timeout)
        return [Alarm(a.memberID, AlarmType(a.alarm)) for a in r.alarms]

    async def move_leader(self, target_id: int, *, timeout: float | None = None) -> Header:
        """Transfer leadership to member ``target_id``. The request must reach the current leader: the client asks
        each endpoint's status to find it. Raises CoordError when no endpoint is the leader."""
        leader_address: str | None = None
        for address in self._transport.addresses:
            try:
                st = await self.status(endpoint=address, timeout=timeout)
            except CoordError:
                continue
            if st.leader and st.leader == st.member_id:
                leader_address = address
                break
        if leader_address is None:
            raise CoordError("move_leader: none of the client's endpoints is the leader")
        request = rpc_pb2.MoveLeaderRequest(targetID=target_id)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.MoveLeaderResponse:
            return await ep.maintenance.MoveLeader(request, timeout=left, metadata=md)

        r = await self._transport.call(
            "move_leader", attempt, kind=RetryKind.UNSAFE, timeout=timeout, address=leader_address
        )
        return Header.from_pb(r.header)
