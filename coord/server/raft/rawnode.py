"""``RawNode``: the caller-facing, thread-unsafe driver of one Raft node, and the ``Ready`` batch it hands out.

The caller's loop::

    node.tick()                      # every heartbeat interval
    node.step(message)               # for every message received from a peer
    if node.has_ready():
        rd = node.ready()
        storage.save(rd.entries, rd.hard_state, rd.snapshot)   # 1. one durable write (fsync)
        transport.send(rd.messages)                            # 2. only after the write is durable
        state_machine.apply(rd.snapshot, rd.committed_entries)  # 3. snapshot first, then entries in order
        node.advance(rd)                                       # 4. acknowledge
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from .config import Config
from .progress import ProgressState
from .raft import Raft
from .storage import Storage
from .types import (
    LOCAL_MESSAGES,
    RESPONSE_MESSAGES,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
    StepLocalMessage,
)


@dataclass(slots=True)
class Ready:
    """Work for the caller, to be done in field order, then acknowledged with ``RawNode.advance(ready)``.

    Between ``ready()`` and ``advance()`` the node may still be ticked and stepped, but ``has_ready()`` is False
    and ``ready()`` must not be called again.
    """

    soft_state: SoftState | None = None
    """New leader/role, or None if unchanged. Volatile: informational only, never persisted."""

    hard_state: HardState | None = None
    """New term/vote/commit, or None if unchanged. Persist it, atomically with ``entries`` and ``snapshot``,
    before sending any message (Raft figure 2: updated on stable storage before responding to RPCs)."""

    entries: list[Entry] = field(default_factory=list)
    """Entries to append to stable storage. An entry whose index already exists replaces it and every later
    entry. Persist before sending messages."""

    snapshot: Snapshot | None = None
    """A snapshot received from the leader, to persist (replacing the whole log) and load into the state machine
    before applying ``committed_entries``."""

    messages: list[Message] = field(default_factory=list)
    """Messages to send, each to ``message.to``, only AFTER the entries, hard state and snapshot above are durable.
    Sending may fail or reorder silently; Raft retries. Report snapshot delivery with ``report_snapshot``.

    One exception (Raft thesis 10.2.1): a leader may send its APP and HEARTBEAT messages while it persists, provided
    it steps no message before this Ready is durable and advanced (its own entries then count towards a commit only
    once they are on disk)."""

    committed_entries: list[Entry] = field(default_factory=list)
    """Committed entries to apply to the state machine, in order, after persisting. For ``CONF_CHANGE`` entries
    call ``RawNode.apply_conf_change(ConfChange.decode(entry.data))``. They may include entries of ``entries``."""

    read_states: list[ReadState] = field(default_factory=list)
    """ReadIndex results: serve the read for ``request_ctx`` once the applied index reaches ``index``."""

    must_sync: bool = False
    """Whether the durable write must be fsynced (new entries or a new term or vote)."""


@dataclass(slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool
    inflight: int


@dataclass(slots=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    lead: int
    role: StateRole
    conf_state: ConfState
    progress: dict[int, ProgressStatus]  # only on the leader
    lead_transferee: int


class RawNode:
    """A Raft node without IO. Not thread safe: drive it from one task."""

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._outstanding = False

    # -- inputs ------------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance the logical clock by one tick (one heartbeat interval / heartbeat_tick)."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (pre-vote first when enabled)."""
        self.raft.step(Message(MessageType.HUP, from_=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose ``data`` for the log; forwarded to the leader when we are a follower.

        Raises ProposalDropped when it surely will not be appended (``reason``: no leader, leadership transfer in
        progress, ...). Success does not guarantee commitment: watch the committed entries."""
        self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=[Entry(data=data)]))

    def propose_batch(self, batch: list[bytes]) -> None:
        """Propose several entries in one message, in order: one append and one broadcast on a leader, one forwarded
        message on a follower. Either all are taken or ProposalDropped is raised for all (same reasons as
        ``propose``); keep a batch to a size a peer message may carry."""
        if batch:
            self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=[Entry(data=d) for d in batch]))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change. Raises ProposalDropped like ``propose``, and also when a previous change
        is not applied yet or the change would leave no voter (only checked on the leader)."""
        entry = Entry(type=EntryType.CONF_CHANGE, data=cc.encode())
        self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=[entry]))

    def step(self, m: Message) -> None:
        """Process a message from a peer. Raises StepLocalMessage for local-only types. Responses from unknown
        peers and proposals forwarded to us that cannot be served are dropped silently (the sender retries)."""
        if m.type in LOCAL_MESSAGES:
            raise StepLocalMessage(f"{m.type.name} is a local message")
        if m.type in RESPONSE_MESSAGES and m.from_ not in self.raft.tracker.progress:
            return
        with contextlib.suppress(ProposalDropped):
            self.raft.step(m)

    def read_index(self, request_ctx: bytes) -> None:
        """Request a linearizable read; the result arrives as a ``ReadState`` with the same ``request_ctx``.
        Raises ProposalDropped (no leader) when no leader is known. The request may be lost on leader change."""
        self.raft.step(Message(MessageType.READ_INDEX, context=request_ctx))

    def transfer_leader(self, transferee: int) -> None:
        """Ask the leader to hand leadership to ``transferee`` (MoveLeader). Proposals are dropped while the
        transfer runs (at most one election timeout)."""
        self.raft.step(Message(MessageType.TRANSFER_LEADER, from_=transferee))

    def report_unreachable(self, node: int) -> None:
        """The transport could not reach ``node``: stop pipelining to it until it answers again."""
        if node in self.raft.tracker.progress:
            self.raft.step(Message(MessageType.UNREACHABLE, from_=node))

    def report_snapshot(self, node: int, success: bool) -> None:
        """Result of sending a snapshot to ``node``. Without a report the leader never retries the snapshot."""
        if node in self.raft.tracker.progress:
            self.raft.step(Message(MessageType.SNAP_STATUS, from_=node, reject=not success))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change (call it while applying its entry). Returns the new membership."""
        return self.raft.apply_conf_change(cc)

    # -- outputs -----------------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if self._outstanding:
            return False
        if r.msgs or r.read_states or r.log.unstable.entries or r.log.unstable.snapshot is not None:
            return True
        if r.soft_state() != self._prev_soft:
            return True
        if r.hard_state() != self._prev_hard:
            return True
        return r.log.has_next_committed()

    def ready(self) -> Ready:
        """The pending work. Call ``advance`` with it once done; see ``Ready`` for the order."""
        if self._outstanding:
            raise RuntimeError("ready() called again before advance()")
        r = self.raft
        soft, hard = r.soft_state(), r.hard_state()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            entries=list(r.log.unstable.entries),
            snapshot=r.log.unstable.snapshot,
            messages=r.msgs,
            committed_entries=r.log.next_committed(),
            read_states=r.read_states,
        )
        rd.must_sync = bool(rd.entries) or (
            rd.hard_state is not None and (hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote)
        )
        r.msgs = []
        r.read_states = []
        self._prev_soft, self._prev_hard = soft, hard
        self._outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied."""
        log = self.raft.log
        if rd.snapshot is not None:
            log.unstable.stable_snap_to(rd.snapshot.metadata.index)
            log.applied = max(log.applied, rd.snapshot.metadata.index)
        if rd.entries:
            log.unstable.stable_to(rd.entries[-1].index, rd.entries[-1].term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        self._outstanding = False

    def status(self) -> Status:
        r = self.raft
        progress: dict[int, ProgressStatus] = {}
        if r.role == StateRole.LEADER:
            for node, pr in sorted(r.tracker.progress.items()):
                progress[node] = ProgressStatus(
                    pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active, pr.inflights.count()
                )
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            lead=r.lead,
            role=r.role,
            conf_state=r.conf_state(),
            progress=progress,
            lead_transferee=r.lead_transferee,
        )

    @property
    def leader_id(self) -> int:
        """The known leader, or 0 (NONE)."""
        return self.raft.lead
