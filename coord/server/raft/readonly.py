"""Batched ReadIndex (Raft thesis §6.4): a leader answers read requests with its commit index once a heartbeat
round started after the requests arrived is acknowledged by a quorum, proving it was still the leader.

At most one round is in flight. Requests that arrive meanwhile wait and share the next round, so under load one
heartbeat round confirms a whole batch of reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadRequest:
    request_ctx: bytes
    origin: int  # the node that asked (the leader itself for local reads)


@dataclass(slots=True)
class ReadRound:
    ctx: bytes  # carried by the round's heartbeats and echoed in their responses
    index: int  # the leader's commit index when the round started
    requests: list[ReadRequest]
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.in_flight: ReadRound | None = None
        self.waiting: list[ReadRequest] = []
        self._rounds = 0

    def add(self, request: ReadRequest) -> None:
        self.waiting.append(request)

    def maybe_start_round(self, commit_index: int, leader_id: int) -> ReadRound | None:
        """Start a round for the waiting requests if none is in flight. Returns the new round (to broadcast)."""
        if self.in_flight is not None or not self.waiting:
            return None
        self._rounds += 1
        ctx = b"ri:" + str(self._rounds).encode()
        self.in_flight = ReadRound(ctx, commit_index, self.waiting, {leader_id})
        self.waiting = []
        return self.in_flight

    def ack(self, ctx: bytes, node: int) -> ReadRound | None:
        """Record a heartbeat acknowledgement; returns the round if it is the in-flight one."""
        if self.in_flight is None or ctx != self.in_flight.ctx:
            return None
        self.in_flight.acks.add(node)
        return self.in_flight

    def finish(self) -> ReadRound:
        assert self.in_flight is not None
        done, self.in_flight = self.in_flight, None
        return done

    def current_ctx(self) -> bytes:
        return self.in_flight.ctx if self.in_flight is not None else b""

    def reset(self) -> None:
        self.in_flight = None
        self.waiting = []
