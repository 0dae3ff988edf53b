"""The Raft state machine: roles, terms, elections, replication, commitment, ReadIndex, membership and leadership
transfer. Pure: it reads ``Storage`` and queues outgoing messages in ``self.msgs``; ``RawNode`` hands them out.

Section numbers refer to "In Search of an Understandable Consensus Algorithm (Extended Version)" (Raft §) and to
Ongaro's dissertation "Consensus: Bridging Theory and Practice" (thesis §).
"""

from __future__ import annotations

import enum

from . import quorum
from .config import Config
from .log import RaftLog
from .progress import ProgressState, ProgressTracker
from .readonly import ReadOnly, ReadRequest
from .storage import Storage
from .types import (
    NONE,
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    ReadState,
    SnapshotTemporarilyUnavailableError,
    SoftState,
    StateRole,
)

MT = MessageType
CAMPAIGN_TRANSFER = b"campaign-transfer"
"""Context of the votes of a leadership transfer: voters grant them even while they still hear from a leader."""


class CampaignKind(enum.Enum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


_VOTE_RESP = {MT.VOTE: MT.VOTE_RESP, MT.PRE_VOTE: MT.PRE_VOTE_RESP}


class Raft:
    """One node's Raft state. Driven only through ``tick``, ``step`` and ``apply_conf_change``."""

    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.id
        self.log = RaftLog(storage)
        self.max_msg_size = config.max_size_per_msg
        self.tracker = ProgressTracker(config.max_inflight_msgs)
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.pre_vote = config.pre_vote
        self.check_quorum = config.check_quorum
        self.rng = config.rng

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = StateRole.FOLLOWER
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        # ReadIndex requests received before this leader committed an entry of its term (thesis §6.4 step 1).
        self.reads_awaiting_commit: list[ReadRequest] = []
        self.lead_transferee = NONE
        # Index of the latest conf change this leader appended; another may be proposed only once it is applied.
        self.pending_conf_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout

        hard_state, conf_state = storage.initial_state()
        self.tracker.set_members(conf_state.voters, conf_state.learners, self.log.last_index() + 1)
        if not hard_state.is_empty():
            self._load_state(hard_state)
        if config.applied > 0:
            self.log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise ValueError(f"hard state commit {hs.commit} outside [{self.log.committed}, {self.log.last_index()}]")
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    # -- state reporting ---------------------------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def conf_state(self) -> ConfState:
        return ConfState(sorted(self.tracker.voters), sorted(self.tracker.learners))

    def promotable(self) -> bool:
        """Only voters may campaign; learners and removed nodes never do."""
        return self.id in self.tracker.voters

    # -- sending -----------------------------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        if m.from_ == NONE:
            m.from_ = self.id
        if m.type in (MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP):
            assert m.term != 0, "vote messages carry an explicit term"
        elif m.type not in (MT.PROP, MT.READ_INDEX):
            # Proposals and read requests are forwarded as-is, like local messages, and carry no term.
            m.term = self.term
        self.msgs.append(m)

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send the entries ``to`` lacks, from its ``next`` index (Raft §5.3), or a snapshot if they were compacted.
        Returns whether a message was sent."""
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            entries = self.log.entries(pr.next, self.max_msg_size)
        except CompactedError:
            return self._send_snapshot(to)
        if not entries and not send_if_empty:
            return False
        commit = self.log.committed
        self.send(Message(MT.APP, to=to, index=prev_index, log_term=prev_term, entries=entries, commit=commit))
        pr.sent_entries(len(entries), entries[-1].index if entries else prev_index)
        return True

    def _send_snapshot(self, to: int) -> bool:
        pr = self.tracker.progress[to]
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that may be down
        try:
            snapshot = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        assert not snapshot.is_empty(), "entries were compacted but there is no snapshot"
        self.send(Message(MT.SNAP, to=to, snapshot=snapshot))
        pr.become_snapshot(snapshot.metadata.index)
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower a commit index beyond what it is known to have (it may lack those entries).
        commit = min(self.tracker.progress[to].match, self.log.committed)
        self.send(Message(MT.HEARTBEAT, to=to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for node in self.tracker.ids():
            if node != self.id:
                self.send_append(node)

    def bcast_heartbeat(self, ctx: bytes) -> None:
        for node in self.tracker.ids():
            if node != self.id:
                self.send_heartbeat(node, ctx)

    # -- role transitions --------------------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # Randomized timeouts make split votes rare (Raft §5.2).
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)
        self.lead_transferee = NONE
        self.tracker.reset_votes()
        last = self.log.last_index()
        for node, pr in self.tracker.progress.items():
            pr.match = last if node == self.id else 0
            pr.next = last + 1
            pr.recent_active = node == self.id
            pr.reset_state(ProgressState.PROBE)
        self.pending_conf_index = 0
        self.read_only.reset()
        self.reads_awaiting_commit = []

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = StateRole.FOLLOWER

    def become_pre_candidate(self) -> None:
        # A pre-candidate changes neither its term nor its vote (thesis §9.6).
        assert self.role != StateRole.LEADER
        self.tracker.reset_votes()
        self.lead = NONE
        self.role = StateRole.PRE_CANDIDATE

    def become_candidate(self) -> None:
        assert self.role != StateRole.LEADER
        self._reset(self.term + 1)  # Raft §5.2: increment currentTerm and vote for self
        self.vote = self.id
        self.role = StateRole.CANDIDATE

    def become_leader(self) -> None:
        assert self.role != StateRole.FOLLOWER
        self._reset(self.term)
        self.lead = self.id
        self.role = StateRole.LEADER
        self.tracker.progress[self.id].become_replicate()
        # Conservatively treat any entry of an earlier term as a possible pending conf change.
        self.pending_conf_index = self.log.last_index()
        # A no-op entry of the new term lets the leader commit earlier entries (Raft §5.4.2, §8).
        self.append_entry([Entry(data=b"")])

    # -- ticking -----------------------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role == StateRole.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, from_=self.id))
            if self.role == StateRole.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer did not finish within an election timeout
        if self.role != StateRole.LEADER:
            return
        self.heartbeat_elapsed += 1
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, from_=self.id))

    # -- elections ---------------------------------------------------------------------------------------------

    def _has_unapplied_conf_change(self) -> bool:
        lo = max(self.log.applied + 1, self.log.first_index())
        if self.log.committed < lo:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in self.log.slice(lo, self.log.committed + 1))

    def hup(self, kind: CampaignKind) -> None:
        if self.role == StateRole.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            return  # our membership may be about to change; let the caller apply first
        self.campaign(kind)

    def campaign(self, kind: CampaignKind) -> None:
        if kind == CampaignKind.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally() == quorum.VoteResult.WON:
            if kind == CampaignKind.PRE_ELECTION:
                self.campaign(CampaignKind.ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind == CampaignKind.TRANSFER else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node in sorted(self.tracker.voters):
            if node != self.id:
                self.send(Message(vote_type, to=node, term=term, index=last_index, log_term=last_term, context=ctx))

    def _handle_vote_request(self, m: Message) -> None:
        resp = _VOTE_RESP[m.type]
        # Raft §5.2: at most one vote per term, first come first served; PreVote never records a vote.
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):  # Raft §5.4.1 election restriction
            self.send(Message(resp, to=m.from_, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self.send(Message(resp, to=m.from_, term=self.term, reject=True))

    # -- the step function -------------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message. Raises ProposalDropped for a local proposal or read that cannot be served."""
        if m.term == 0:
            pass  # local message, proposal or forwarded read
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                in_lease = self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    # We heard from a leader within the minimum election timeout: ignore the (pre)vote, so a
                    # partitioned node rejoining cannot depose a healthy leader (thesis §4.2.3).
                    return
            if m.type == MT.PRE_VOTE:
                pass  # never change our term in response to a PreVote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # the term is bumped when the pre-election is won
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)  # Raft §5.1: a higher term makes us a follower
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader, maybe cut off and unable to learn our term any other way: tell it.
                self.send(Message(MT.APP_RESP, to=m.from_))
            elif m.type == MT.PRE_VOTE:
                self.send(Message(MT.PRE_VOTE_RESP, to=m.from_, term=self.term, reject=True))
            return  # Raft §5.1: reject stale-term requests

        if m.type == MT.HUP:
            self.hup(CampaignKind.PRE_ELECTION if self.pre_vote else CampaignKind.ELECTION)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == StateRole.LEADER:
            self._step_leader(m)
        elif self.role == StateRole.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self.bcast_heartbeat(self.read_only.current_ctx())
            return
        if t == MT.CHECK_QUORUM:
            if not self.tracker.quorum_active():
                self.become_follower(self.term, NONE)  # thesis §6.2: we may be partitioned; stop serving
                return
            for node, peer in self.tracker.progress.items():
                peer.recent_active = node == self.id
            return
        if t == MT.PROP:
            self._propose(m)
            return
        if t == MT.READ_INDEX:
            self._leader_read_index(ReadRequest(m.context, m.from_ if m.from_ != NONE else self.id))
            return
        if t == MT.TRANSFER_LEADER:
            self._transfer_leader(m.from_)
            return
        pr = self.tracker.progress.get(m.from_)
        if pr is None:
            return  # a response from a node no longer in the configuration
        if t == MT.APP_RESP:
            self._handle_append_response(m)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(m.from_)
            if m.context:
                self._handle_read_ack(m.context, m.from_)
        elif t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for a heartbeat response before probing again
        elif t == MT.UNREACHABLE and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def _propose(self, m: Message) -> None:
        if not m.entries:
            raise ProposalDropped(ProposalDropped.REASON_INVALID)
        if self.id not in self.tracker.progress:
            raise ProposalDropped(ProposalDropped.REASON_NOT_MEMBER)
        if self.lead_transferee != NONE:
            raise ProposalDropped(ProposalDropped.REASON_TRANSFERRING)
        conf_changes = [i for i, e in enumerate(m.entries) if e.type == EntryType.CONF_CHANGE]
        if conf_changes:
            # One membership change at a time (thesis §4.1): the previous one must be applied first.
            if len(conf_changes) > 1 or self.pending_conf_index > self.log.applied:
                raise ProposalDropped(ProposalDropped.REASON_CONF_CHANGE_PENDING)
            try:
                cc = ConfChange.decode(m.entries[conf_changes[0]].data)
            except ValueError:
                raise ProposalDropped(ProposalDropped.REASON_INVALID) from None
            if not self._valid_conf_change(cc):
                raise ProposalDropped(ProposalDropped.REASON_INVALID)
            self.pending_conf_index = self.log.last_index() + conf_changes[0] + 1
        # Copy: the message may be duplicated or still referenced by its sender.
        self.append_entry([Entry(data=e.data, type=e.type) for e in m.entries])
        self.bcast_append()

    def _valid_conf_change(self, cc: ConfChange) -> bool:
        if cc.node_id <= 0:
            return False
        if cc.type == ConfChangeType.ADD_VOTER:
            return True
        return self.tracker.voters - {cc.node_id} != set()  # never remove or demote the last voter

    def append_entry(self, entries: list[Entry]) -> None:
        last = self.log.last_index()
        for i, e in enumerate(entries):
            e.term = self.term
            e.index = last + 1 + i
        self.log.append(entries)
        pr = self.tracker.progress.get(self.id)
        if pr is not None:
            pr.maybe_update(self.log.last_index())
        self.maybe_commit()

    def maybe_commit(self) -> bool:
        """Commit up to the quorum's match index, counting only entries of the current term (Raft §5.4.2)."""
        if not self.log.maybe_commit(self.tracker.committed(), self.term):
            return False
        if self.reads_awaiting_commit:
            for req in self.reads_awaiting_commit:
                self.read_only.add(req)
            self.reads_awaiting_commit = []
            self._start_read_round()
        return True

    def _handle_append_response(self, m: Message) -> None:
        pr = self.tracker.progress[m.from_]
        pr.recent_active = True
        if m.reject:
            # Fast backtracking (Raft §5.3, end): jump over the follower's whole conflicting term at once.
            next_probe = min(m.reject_hint, self.log.last_index())
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(next_probe, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.from_)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.bcast_append()
        elif was_paused:
            self.send_append(m.from_)
        # Pipelining: keep sending while the window has room and there are entries to send.
        while self.send_append(m.from_, send_if_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=m.from_))

    def _transfer_leader(self, transferee: int) -> None:
        pr = self.tracker.progress.get(transferee)
        if pr is None or pr.is_learner or transferee == self.id:
            return
        if self.lead_transferee == transferee:
            return
        self.lead_transferee = transferee
        self.election_elapsed = 0  # the transfer must finish within one election timeout (thesis §3.10)
        if pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=transferee))
        else:
            self.send_append(transferee)

    # -- ReadIndex (thesis §6.4) ------------------------------------------------------------------------------

    def _respond_read(self, req: ReadRequest, index: int) -> None:
        if req.origin == self.id:
            self.read_states.append(ReadState(index, req.request_ctx))
        else:
            self.send(Message(MT.READ_INDEX_RESP, to=req.origin, index=index, context=req.request_ctx))

    def _leader_read_index(self, req: ReadRequest) -> None:
        if self.tracker.voters == {self.id}:
            self._respond_read(req, self.log.committed)  # a single voter is always the leader
        elif self.log.term_or_zero(self.log.committed) != self.term:
            self.reads_awaiting_commit.append(req)  # our commit index may lag until our no-op commits
        else:
            self.read_only.add(req)
            self._start_read_round()

    def _start_read_round(self) -> None:
        read_round = self.read_only.maybe_start_round(self.log.committed, self.id)
        if read_round is None:
            return
        if self.tracker.voters == {self.id}:
            self._handle_read_ack(read_round.ctx, self.id)
        else:
            self.bcast_heartbeat(read_round.ctx)

    def _handle_read_ack(self, ctx: bytes, node: int) -> None:
        read_round = self.read_only.ack(ctx, node)
        if read_round is None:
            return
        if len(read_round.acks & self.tracker.voters) < quorum.majority(len(self.tracker.voters)):
            return
        done = self.read_only.finish()
        for req in done.requests:
            self._respond_read(req, done.index)
        self._start_read_round()

    # -- followers and candidates ------------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in (MT.PROP, MT.TRANSFER_LEADER, MT.READ_INDEX):
            if self.lead == NONE:
                if t == MT.TRANSFER_LEADER:
                    return
                raise ProposalDropped(ProposalDropped.REASON_NO_LEADER)
            m.to = self.lead
            self.send(m)  # forward to the leader (DESIGN: clients may write to any member)
        elif t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_leader_message(m)
        elif t == MT.TIMEOUT_NOW:
            self.hup(CampaignKind.TRANSFER)  # skip pre-vote: the leader asked us to take over
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.PROP, MT.READ_INDEX):
            raise ProposalDropped(ProposalDropped.REASON_NO_LEADER)
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            # Raft §5.2: a leader of our term exists; return to follower.
            self.become_follower(m.term, m.from_)
            self._handle_leader_message(m)
            return
        my_resp = MT.PRE_VOTE_RESP if self.role == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
        if t != my_resp:
            return
        self.tracker.record_vote(m.from_, not m.reject)
        result = self.tracker.tally()
        if result == quorum.VoteResult.WON:
            if self.role == StateRole.PRE_CANDIDATE:
                self.campaign(CampaignKind.ELECTION)
            else:
                self.become_leader()
                self.bcast_append()
        elif result == quorum.VoteResult.LOST:
            self.become_follower(self.term, NONE)

    def _handle_leader_message(self, m: Message) -> None:
        if m.type == MT.APP:
            self._handle_append(m)
        elif m.type == MT.HEARTBEAT:
            self.log.commit_to(m.commit)
            self.send(Message(MT.HEARTBEAT_RESP, to=m.from_, context=m.context))
        else:
            self._handle_snapshot(m)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self.send(Message(MT.APP_RESP, to=m.from_, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(Message(MT.APP_RESP, to=m.from_, index=last_new))
            return
        # Reject, with a hint: the last index whose term is <= the leader's term at m.index (Raft §5.3).
        hint, hint_term = self.log.find_conflict_by_term(min(m.index, self.log.last_index()), m.log_term)
        self.send(Message(MT.APP_RESP, to=m.from_, index=m.index, reject=True, reject_hint=hint, log_term=hint_term))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self._restore(m):
            self.send(Message(MT.APP_RESP, to=m.from_, index=self.log.last_index()))
        else:
            self.send(Message(MT.APP_RESP, to=m.from_, index=self.log.committed))

    def _restore(self, m: Message) -> bool:
        """InstallSnapshot receiver (Raft §7). Returns False when the snapshot brings nothing new."""
        assert m.snapshot is not None
        meta = m.snapshot.metadata
        if meta.index <= self.log.committed:
            return False
        # The snapshot's membership may predate our addition (a new node gets the leader's latest snapshot,
        # then the entries that added it), so it is accepted even when it does not list us.
        cs = meta.conf_state
        if self.log.match_term(meta.index, meta.term):
            # We have the snapshot's last entry: keep our log and just fast-forward the commit index.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(m.snapshot)
        self.tracker.set_members(cs.voters, cs.learners, self.log.last_index() + 1)
        return True

    # -- membership (thesis §4.1: one server at a time, effective when applied) --------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        voters, learners = set(self.tracker.voters), set(self.tracker.learners)
        node = cc.node_id
        if cc.type == ConfChangeType.ADD_VOTER:
            learners.discard(node)
            voters.add(node)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            voters.discard(node)
            learners.add(node)
        else:
            voters.discard(node)
            learners.discard(node)
        if not voters:
            return self.conf_state()  # refused at proposal time; every node ignores it the same way
        self.tracker.set_members(voters, learners, self.log.last_index() + 1)
        if self.role != StateRole.LEADER:
            return self.conf_state()
        if self.id not in voters:
            # We were removed or demoted: tell everyone the commit index, then step down.
            self.bcast_heartbeat(b"")
            self.become_follower(self.term, NONE)
            return self.conf_state()
        if self.maybe_commit():
            self.bcast_append()  # a smaller quorum may commit more now
        else:
            for peer in self.tracker.ids():
                if peer != self.id:
                    # Probe new members at once rather than at the next heartbeat.
                    self.send_append(peer, send_if_empty=self.tracker.progress[peer].match == 0)
        if self.lead_transferee != NONE and self.lead_transferee not in voters:
            self.lead_transferee = NONE
        return self.conf_state()
