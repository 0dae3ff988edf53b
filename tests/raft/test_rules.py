"""One test per rule of figure 2 of the Raft paper, then PreVote, CheckQuorum, learners, flow control, ReadIndex,
leader transfer and membership rules."""

from __future__ import annotations

import random
from typing import Any

import pytest

from coord.server.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    RawNode,
    StateRole,
    StepLocalMessage,
)
from coord.server.raft.raft import CAMPAIGN_TRANSFER, Raft
from tests.raft.helpers import Network, new_raft, storage_with, take

MT = MessageType
L, F, C, P = StateRole.LEADER, StateRole.FOLLOWER, StateRole.CANDIDATE, StateRole.PRE_CANDIDATE


def elect(net: Network, node: int = 1) -> Raft:
    net.campaign(node)
    leader = net.nodes[node]
    assert leader.role == L
    return leader


def cluster(n: int = 3, **options: Any) -> Network:
    voters = list(range(1, n + 1))
    return Network(*(new_raft(i, voters, **options) for i in voters))


# -- Figure 2, "Rules for Servers" / All Servers -------------------------------------------------------------------


def test_committed_entries_are_applied_in_order_exactly_once() -> None:
    st = storage_with([1])
    node = RawNode(Config(id=1, rng=random.Random(1)), st)
    node.campaign()
    for data in (b"a", b"b"):
        node.propose(data)
    applied: list[bytes] = []
    while node.has_ready():
        rd = node.ready()
        st.append(rd.entries)
        applied += [e.data for e in rd.committed_entries]
        node.advance(rd)
    assert applied == [b"", b"a", b"b"]
    assert node.status().applied == node.status().commit == 4


@pytest.mark.parametrize("kind", [MT.APP, MT.HEARTBEAT, MT.APP_RESP, MT.VOTE_RESP, MT.HEARTBEAT_RESP, MT.SNAP])
@pytest.mark.parametrize("role", [F, C, L])
def test_a_higher_term_converts_any_role_to_follower(kind: MessageType, role: StateRole) -> None:
    net = cluster()
    r = net.nodes[1]
    if role == C:
        r.become_candidate()
    elif role == L:
        elect(net)
    m = Message(kind, from_=2, to=1, term=r.term + 5, log_term=0, index=0)
    if kind == MT.SNAP:
        m.index, m.snapshot = 0, r.log.snapshot()
    r.step(m)
    assert (r.role, r.term) == (F, m.term)
    assert r.lead == (2 if kind in (MT.APP, MT.HEARTBEAT, MT.SNAP) else 0)


# -- Followers -----------------------------------------------------------------------------------------------------


def test_follower_starts_an_election_after_its_randomized_timeout() -> None:
    r = new_raft(1, pre_vote=False)
    timeout = r.randomized_election_timeout
    assert r.election_timeout <= timeout < 2 * r.election_timeout
    for _ in range(timeout - 1):
        r.tick()
    assert r.role == F
    r.tick()
    assert (r.role, r.term, r.vote) == (C, 2, 1)


def test_follower_timer_is_reset_by_the_leader() -> None:
    r = new_raft(1)
    for _ in range(100):
        r.tick()
        r.step(Message(MT.HEARTBEAT, from_=2, to=1, term=1))
    assert r.role == F and r.lead == 2


def test_randomized_timeouts_differ_between_nodes() -> None:
    timeouts = {new_raft(i).randomized_election_timeout for i in range(1, 10)}
    assert len(timeouts) > 1


# -- Candidates ----------------------------------------------------------------------------------------------------


def test_candidate_increments_term_votes_for_itself_and_requests_votes() -> None:
    r = new_raft(1, terms=[1, 1], pre_vote=False)
    r.step(Message(MT.HUP, from_=1))
    assert (r.role, r.term, r.vote) == (C, 2, 1)
    votes = take(r, MT.VOTE)
    assert sorted(m.to for m in votes) == [2, 3]
    assert all((m.term, m.index, m.log_term) == (2, 3, 1) for m in votes)


@pytest.mark.parametrize(
    ("grants", "rejects", "expected"), [([2], [], L), ([], [2, 3], F), ([], [2], C), ([2, 3], [], L)]
)
def test_candidate_needs_a_majority(grants: list[int], rejects: list[int], expected: StateRole) -> None:
    r = new_raft(1, pre_vote=False)
    r.step(Message(MT.HUP, from_=1))
    for v in grants:
        r.step(Message(MT.VOTE_RESP, from_=v, to=1, term=r.term))
    for v in rejects:
        r.step(Message(MT.VOTE_RESP, from_=v, to=1, term=r.term, reject=True))
    assert r.role == expected


def test_candidate_returns_to_follower_on_append_from_leader_of_its_term() -> None:
    r = new_raft(1, pre_vote=False)
    r.step(Message(MT.HUP, from_=1))
    r.step(Message(MT.APP, from_=2, to=1, term=r.term, index=1, log_term=1))
    assert (r.role, r.lead) == (F, 2)


def test_candidate_starts_a_new_election_after_a_split_vote() -> None:
    r = new_raft(1, pre_vote=False)
    r.step(Message(MT.HUP, from_=1))
    term = r.term
    for _ in range(2 * r.election_timeout):
        r.tick()
    assert r.role == C and r.term > term


def test_candidate_drops_proposals_with_no_leader() -> None:
    r = new_raft(1, pre_vote=False)
    r.step(Message(MT.HUP, from_=1))
    with pytest.raises(ProposalDropped) as err:
        r.step(Message(MT.PROP, from_=1, entries=[Entry(data=b"x")]))
    assert err.value.reason == ProposalDropped.REASON_NO_LEADER


# -- Leaders -------------------------------------------------------------------------------------------------------


def test_new_leader_appends_a_noop_and_replicates_it() -> None:
    r = new_raft(1, pre_vote=False)
    r.step(Message(MT.HUP, from_=1))
    r.step(Message(MT.VOTE_RESP, from_=2, to=1, term=r.term))
    assert r.role == L
    assert r.log.last_index() == 2 and r.log.term(2) == r.term
    apps = take(r, MT.APP)
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(m.entries[0].data == b"" for m in apps)


def test_leader_appends_proposals_and_commits_once_a_majority_has_them() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(3)
    net.propose(1, b"x")
    assert leader.log.committed == 3
    assert net.nodes[2].log.committed == 3
    assert net.nodes[3].log.last_index() == 2


def test_leader_decrements_next_index_on_rejection_and_retries() -> None:
    leader = new_raft(1, terms=[1, 1, 1, 1], pre_vote=False)
    leader.step(Message(MT.HUP, from_=1))
    leader.step(Message(MT.VOTE_RESP, from_=2, to=1, term=leader.term))
    take(leader)
    pr = leader.tracker.progress[2]
    assert pr.next == 6
    # Follower 2 has only index 1: it rejects with hint 1.
    leader.step(Message(MT.APP_RESP, from_=2, to=1, term=leader.term, index=5, reject=True, reject_hint=1, log_term=1))
    assert pr.next == 2
    retry = take(leader, MT.APP)
    assert [(m.to, m.index) for m in retry] == [(2, 1)]
    assert len(retry[0].entries) == 5


def test_fast_backtracking_skips_a_whole_conflicting_term() -> None:
    # Leader log terms: 1 1 1 1 4 4 4; follower: 1 1 1 2 2 2 2 2 2 (indexes 1..).
    leader_net = Network(new_raft(1, terms=[1, 1, 1, 4, 4, 4], term=4), new_raft(2, terms=[1, 1, 2, 2, 2, 2, 2, 2]))
    follower = leader_net.nodes[2]
    follower.term = 4
    leader = leader_net.nodes[1]
    leader.term = 4
    leader.become_candidate()
    leader.become_leader()
    take(leader)
    leader.tracker.progress[2].next = 9
    leader.send_append(2)
    rejections = 0
    for _ in range(20):
        for m in take(leader):
            if m.to == 2:
                follower.step(m)
        responses = take(follower)
        rejections += sum(m.reject for m in responses)
        for m in responses:
            leader.step(m)
    # Decrementing one index at a time would take 5 rejections (8, 7, 6, 5, 4); the term hints need two: the
    # leader skips its term-4 entries at once, then the follower skips back over its own term-2 entry.
    assert rejections == 2
    assert [follower.log.term(i) for i in range(2, 9)] == [leader.log.term(i) for i in range(2, 9)]


def test_leader_only_commits_entries_of_its_own_term_by_counting() -> None:
    """Figure 8 (Raft §5.4.2): an entry of an earlier term on a majority is not committed by counting."""
    leader = new_raft(1, terms=[2], term=3, pre_vote=False)
    leader.step(Message(MT.HUP, from_=1))
    leader.step(Message(MT.VOTE_RESP, from_=2, to=1, term=leader.term))
    assert leader.role == L and leader.log.committed == 1
    # Follower 2 acknowledges the old entry at index 2 but not the no-op at index 3.
    leader.step(Message(MT.APP_RESP, from_=2, to=1, term=leader.term, index=2))
    assert leader.log.committed == 1
    leader.step(Message(MT.APP_RESP, from_=2, to=1, term=leader.term, index=3))
    assert leader.log.committed == 3  # committing the no-op commits index 2 indirectly


# -- AppendEntries receiver ----------------------------------------------------------------------------------------


def test_append_rule1_rejects_a_stale_term_and_tells_the_sender() -> None:
    r = new_raft(1, term=5)
    r.step(Message(MT.APP, from_=2, to=1, term=3, index=1, log_term=1, entries=[Entry(3, 2)]))
    assert r.log.last_index() == 1
    (resp,) = take(r)
    assert (resp.type, resp.term) == (MT.APP_RESP, 5)


def test_append_rule2_rejects_when_prev_entry_does_not_match() -> None:
    r = new_raft(1, terms=[1, 1])
    r.step(Message(MT.APP, from_=2, to=1, term=2, index=3, log_term=2, entries=[Entry(2, 4)]))
    (resp,) = take(r)
    assert resp.reject and resp.reject_hint == 3 and resp.log_term == 1
    assert r.log.last_index() == 3


def test_append_rule3_and_4_truncate_conflicts_and_append_new_entries() -> None:
    r = new_raft(1, terms=[1, 1, 1])
    new = [Entry(1, 3, data=b"e3"), Entry(2, 4, data=b"x"), Entry(2, 5, data=b"y")]
    r.step(Message(MT.APP, from_=2, to=1, term=2, index=2, log_term=1, entries=new))
    assert [(e.term, e.index) for e in r.log.slice(2, 6)] == [(1, 2), (1, 3), (2, 4), (2, 5)]
    (resp,) = take(r)
    assert (resp.reject, resp.index) == (False, 5)


def test_append_of_entries_already_present_changes_nothing() -> None:
    r = new_raft(1, terms=[1, 1, 1])
    r.step(Message(MT.APP, from_=2, to=1, term=1, index=1, log_term=1, entries=[Entry(1, 2, data=b"e2")]))
    assert r.log.last_index() == 4 and not r.log.unstable.entries


def test_append_rule5_commit_is_min_of_leader_commit_and_last_new_entry() -> None:
    r = new_raft(1, terms=[1, 1, 1])
    r.step(Message(MT.APP, from_=2, to=1, term=1, index=2, log_term=1, commit=10))
    assert r.log.committed == 2
    r.step(Message(MT.APP, from_=2, to=1, term=1, index=3, log_term=1, commit=3, entries=[]))
    assert r.log.committed == 3


def test_append_below_commit_is_acknowledged_with_the_commit_index() -> None:
    r = new_raft(1, terms=[1, 1, 1])
    r.log.commit_to(4)
    r.step(Message(MT.APP, from_=2, to=1, term=1, index=2, log_term=1, entries=[Entry(1, 3)]))
    (resp,) = take(r)
    assert (resp.reject, resp.index) == (False, 4)


# -- RequestVote receiver ------------------------------------------------------------------------------------------


def test_vote_rule1_rejects_stale_terms() -> None:
    r = new_raft(1, term=5, pre_vote=False, check_quorum=False)
    r.step(Message(MT.VOTE, from_=2, to=1, term=4, index=10, log_term=4))
    assert take(r) == [] and r.vote == 0


@pytest.mark.parametrize(
    ("log_term", "index", "granted"),
    [(3, 2, True), (2, 5, True), (2, 4, True), (2, 3, False), (1, 9, False)],
)
def test_vote_rule2_requires_an_up_to_date_log(log_term: int, index: int, granted: bool) -> None:
    # Voter log: terms 1, 2, 2 at indexes 2..4 (last 2/4).
    r = new_raft(1, terms=[1, 2, 2], pre_vote=False, check_quorum=False)
    r.step(Message(MT.VOTE, from_=2, to=1, term=5, index=index, log_term=log_term))
    (resp,) = take(r)
    assert resp.reject is not granted
    assert r.vote == (2 if granted else 0)


def test_vote_rule2_at_most_one_vote_per_term() -> None:
    r = new_raft(1, pre_vote=False, check_quorum=False)
    r.step(Message(MT.VOTE, from_=2, to=1, term=2, index=1, log_term=1))
    r.step(Message(MT.VOTE, from_=3, to=1, term=2, index=1, log_term=1))
    r.step(Message(MT.VOTE, from_=2, to=1, term=2, index=1, log_term=1))  # a retry is granted again
    assert [m.reject for m in take(r)] == [False, True, False]
    assert r.vote == 2


def test_vote_survives_restart() -> None:
    st = storage_with([1, 2, 3])
    node = RawNode(Config(id=1, rng=random.Random(1), pre_vote=False), st)
    node.step(Message(MT.VOTE, from_=2, to=1, term=2, index=1, log_term=1))
    rd = node.ready()
    assert rd.hard_state is not None and rd.must_sync
    st.set_hard_state(rd.hard_state)
    restarted = Raft(Config(id=1, rng=random.Random(1), pre_vote=False), st)
    assert (restarted.term, restarted.vote) == (2, 2)


# -- PreVote -------------------------------------------------------------------------------------------------------


def test_prevote_does_not_change_terms_when_it_loses() -> None:
    net = cluster()
    elect(net)
    net.isolate(3)
    for _ in range(5):
        net.campaign(3)
    assert net.nodes[3].term == net.nodes[1].term == 2
    assert net.nodes[3].role == P


def test_prevote_is_granted_for_a_higher_term_without_recording_a_vote() -> None:
    r = new_raft(1, check_quorum=False)
    r.step(Message(MT.PRE_VOTE, from_=2, to=1, term=5, index=1, log_term=1))
    (resp,) = take(r)
    assert (resp.type, resp.reject, resp.term) == (MT.PRE_VOTE_RESP, False, 5)
    assert (r.term, r.vote) == (1, 0)


def test_prevote_from_a_lower_term_is_rejected_with_our_term() -> None:
    r = new_raft(1, term=4)
    r.step(Message(MT.PRE_VOTE, from_=2, to=1, term=3, index=1, log_term=1))
    (resp,) = take(r)
    assert (resp.type, resp.reject, resp.term) == (MT.PRE_VOTE_RESP, True, 4)


def test_prevote_winner_runs_a_real_election() -> None:
    net = cluster()
    leader = elect(net)
    assert leader.term == 2
    types = {m.type for m in net.delivered}
    assert {MT.PRE_VOTE, MT.PRE_VOTE_RESP, MT.VOTE, MT.VOTE_RESP} <= types


def test_rejected_prevote_with_higher_term_makes_the_candidate_follow() -> None:
    r = new_raft(1)
    r.step(Message(MT.HUP, from_=1))
    r.step(Message(MT.PRE_VOTE_RESP, from_=2, to=1, term=7, reject=True))
    assert (r.role, r.term) == (F, 7)


# -- CheckQuorum and disruption ------------------------------------------------------------------------------------


def test_leader_steps_down_without_a_quorum_for_an_election_timeout() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(1)
    for _ in range(2 * leader.election_timeout):
        leader.tick()
        net.flush()
    assert leader.role == F


def test_leader_with_active_quorum_stays() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(3)
    for _ in range(5 * leader.election_timeout):
        leader.tick()
        net.flush()
    assert leader.role == L


def test_votes_are_ignored_within_the_leader_lease() -> None:
    net = cluster(pre_vote=False)
    leader = elect(net)
    follower = net.nodes[2]
    follower.step(Message(MT.VOTE, from_=3, to=2, term=9, index=100, log_term=9))
    assert take(follower) == [] and follower.term == leader.term


def test_without_prevote_a_rejoining_node_forces_a_new_term() -> None:
    # This is the disruption PreVote prevents (compare the next test): the isolated node's term grew, and its
    # answer to the leader's stale-term append deposes the leader. Safe, but it costs an election.
    net = cluster(pre_vote=False)
    leader = elect(net)
    net.isolate(3)
    for _ in range(3):
        net.campaign(3)
    assert net.nodes[3].term > leader.term
    net.heal()
    net.propose(1, b"x")
    assert leader.role == F and leader.term == net.nodes[3].term


def test_partitioned_node_rejoins_without_disruption_with_prevote() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(3)
    for _ in range(50):
        net.nodes[3].tick()
        net.flush()
    net.heal()
    for _ in range(3):
        leader.tick()
        net.flush()
    assert leader.role == L and leader.term == 2
    assert net.nodes[3].role == F and net.nodes[3].lead == 1


def test_transfer_votes_bypass_the_lease() -> None:
    net = cluster()
    elect(net)
    follower = net.nodes[2]
    follower.step(Message(MT.VOTE, from_=3, to=2, term=3, index=2, log_term=2, context=CAMPAIGN_TRANSFER))
    (resp,) = take(follower)
    assert not resp.reject


# -- Learners ------------------------------------------------------------------------------------------------------


def test_learner_replicates_but_never_campaigns_and_is_not_counted() -> None:
    net = Network(*(new_raft(i, [1, 2, 3], learners=[4]) for i in (1, 2, 3, 4)))
    leader = elect(net)
    learner = net.nodes[4]
    for _ in range(100):
        learner.tick()
    net.flush()
    assert learner.role == F and learner.term == leader.term
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"x")
    assert learner.log.last_index() == 3
    assert leader.log.committed == 2  # the learner's copy does not count toward a majority
    assert leader.tracker.progress[4].is_learner


def test_learner_grants_votes_when_asked() -> None:
    # A learner may have been promoted without knowing it yet, so it answers vote requests.
    r = new_raft(4, [1, 2, 3], learners=[4], check_quorum=False)
    r.step(Message(MT.VOTE, from_=1, to=4, term=2, index=1, log_term=1))
    assert not take(r)[0].reject


def test_promoted_learner_can_campaign() -> None:
    r = new_raft(4, [1, 2, 3], learners=[4], pre_vote=False)
    r.step(Message(MT.HUP, from_=4))
    assert r.role == F
    r.apply_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    r.step(Message(MT.HUP, from_=4))
    assert r.role == C


# -- flow control ----------------------------------------------------------------------------------------------------


def test_inflight_window_bounds_messages_and_heartbeat_response_frees_one() -> None:
    net = cluster(max_inflight_msgs=2, max_size_per_msg=1)
    leader = elect(net)
    net.isolate(2)
    net.isolate(3)
    for i in range(5):
        leader.step(Message(MT.PROP, from_=1, entries=[Entry(data=f"{i}".encode())]))
    apps = [m for m in take(leader, MT.APP) if m.to == 2 and m.entries]
    pr = leader.tracker.progress[2]
    assert pr.state == ProgressState.REPLICATE and pr.inflights.full()
    assert len(apps) == 2 and all(len(m.entries) == 1 for m in apps)
    leader.step(Message(MT.HEARTBEAT_RESP, from_=2, to=1, term=leader.term))
    # A heartbeat response frees one slot (the oldest message may be lost), so one more append goes out.
    assert [m.entries[0].index for m in take(leader, MT.APP) if m.to == 2] == [5]


def test_byte_limit_per_message() -> None:
    leader = new_raft(1, terms=[1] * 10, max_size_per_msg=50)
    leader.become_candidate()
    leader.become_leader()
    take(leader)
    pr = leader.tracker.progress[2]
    pr.match, pr.next = 1, 2
    pr.become_replicate()
    leader.send_append(2)
    (m,) = take(leader)
    assert 1 <= len(m.entries) < 10
    assert sum(e.size() for e in m.entries) <= 50 or len(m.entries) == 1


def test_unreachable_peer_goes_back_to_probing() -> None:
    net = cluster()
    leader = elect(net)
    assert leader.tracker.progress[2].state == ProgressState.REPLICATE
    node = RawNode.__new__(RawNode)
    node.raft = leader
    node.report_unreachable(2)
    assert leader.tracker.progress[2].state.name == "PROBE"


# -- snapshots -----------------------------------------------------------------------------------------------------


def test_failed_snapshot_report_lets_the_leader_retry() -> None:
    st = storage_with([1, 2, 3], terms=[1, 1, 1])
    st.create_snapshot(4, ConfState([1, 2, 3]), b"")
    st.compact(4)
    st.set_hard_state(HardState(term=1, commit=4))
    leader = new_raft(1, storage=st)
    leader.become_candidate()
    leader.become_leader()
    take(leader)
    leader.tracker.progress[2].recent_active = True
    leader.step(Message(MT.APP_RESP, from_=2, to=1, term=leader.term, index=4, reject=True, reject_hint=1, log_term=1))
    assert [m.type for m in take(leader)] == [MT.SNAP]
    pr = leader.tracker.progress[2]
    assert pr.state == ProgressState.SNAPSHOT and pr.is_paused()
    leader.step(Message(MT.SNAP_STATUS, from_=2, reject=True))
    assert pr.state.name == "PROBE" and pr.probe_sent
    leader.step(Message(MT.HEARTBEAT_RESP, from_=2, to=1, term=leader.term))
    assert [m.type for m in take(leader) if m.to == 2] == [MT.SNAP]


def test_no_snapshot_to_an_inactive_peer() -> None:
    st = storage_with([1, 2, 3], terms=[1, 1])
    st.create_snapshot(3, ConfState([1, 2, 3]), b"")
    st.compact(3)
    st.set_hard_state(HardState(term=1, commit=3))
    leader = new_raft(1, storage=st)
    leader.become_candidate()
    leader.become_leader()
    take(leader)
    pr = leader.tracker.progress[2]
    pr.recent_active = False
    pr.next = 2
    assert leader.send_append(2) is False


def test_stale_snapshot_is_ignored_and_matching_one_fast_forwards() -> None:
    r = new_raft(1, terms=[1, 1, 1])
    snap_old = r.log.snapshot()
    r.step(Message(MT.SNAP, from_=2, to=1, term=1, snapshot=snap_old))
    assert take(r)[0].index == r.log.committed
    st = storage_with([1, 2, 3], terms=[1, 1, 1])
    snap = st.create_snapshot(3, ConfState([1, 2, 3]), b"")
    r.step(Message(MT.SNAP, from_=2, to=1, term=1, snapshot=snap))
    assert r.log.committed == 3 and r.log.last_index() == 4  # kept the log, moved the commit


# -- proposals, forwarding, ReadIndex ------------------------------------------------------------------------------


def test_follower_forwards_proposals_and_reads_to_the_leader() -> None:
    net = cluster()
    leader = elect(net)
    net.propose(2, b"fwd")
    assert leader.log.term(3) == leader.term and leader.log.slice(3, 4)[0].data == b"fwd"
    net.step(2, Message(MT.READ_INDEX, context=b"r"))
    assert net.nodes[2].read_states[-1].request_ctx == b"r"
    assert net.nodes[2].read_states[-1].index == leader.log.committed


def test_a_batch_of_proposals_is_one_message_and_keeps_its_order() -> None:
    net = cluster()
    leader = elect(net)
    follower = net.nodes[2]
    take(follower)
    follower_node = RawNode.__new__(RawNode)
    follower_node.raft = follower  # the batch API on the follower's state machine
    follower_node.propose_batch([b"a", b"b", b"c"])
    forwarded = take(follower, MT.PROP)
    assert len(forwarded) == 1 and [e.data for e in forwarded[0].entries] == [b"a", b"b", b"c"]
    delivered = len(net.delivered)
    net.step(1, forwarded[0])
    first = leader.log.last_index() - 2
    assert [e.data for e in leader.log.slice(first, first + 3)] == [b"a", b"b", b"c"]
    appends = [m for m in net.delivered[delivered:] if m.type == MT.APP and m.to == 2 and m.entries]
    assert len(appends) == 1 and [e.data for e in appends[0].entries] == [b"a", b"b", b"c"]
    assert follower.log.last_index() == leader.log.last_index()
    RawNode.propose_batch(follower_node, [])  # nothing to propose: no message
    assert not take(follower, MT.PROP)


def test_a_batch_without_leader_is_dropped_whole() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1, 2, 3]))
    before = node.raft.log.last_index()
    with pytest.raises(ProposalDropped) as err:
        node.propose_batch([b"x", b"y"])
    assert err.value.reason == "no leader"
    assert node.raft.log.last_index() == before


def test_proposal_without_leader_is_dropped_with_no_leader() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1, 2, 3]))
    with pytest.raises(ProposalDropped) as err:
        node.propose(b"x")
    assert err.value.reason == "no leader" and "no leader" in str(err.value)
    with pytest.raises(ProposalDropped):
        node.read_index(b"r")


def test_remote_proposal_that_cannot_be_served_is_dropped_silently() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1, 2, 3]))
    node.step(Message(MT.PROP, from_=2, to=1, entries=[Entry(data=b"x")]))
    assert not node.raft.msgs


def test_read_index_waits_for_the_first_commit_of_the_term() -> None:
    net = cluster()
    net.filter = lambda m: m.type != MT.APP_RESP
    leader = elect(net)
    net.step(1, Message(MT.READ_INDEX, context=b"early"))
    assert leader.read_states == []
    net.filter = None
    leader.tick()
    net.flush()
    assert [rs.request_ctx for rs in leader.read_states] == [b"early"]
    assert leader.read_states[0].index == leader.log.committed


def test_single_voter_reads_immediately() -> None:
    r = new_raft(1, voters=[1])
    r.step(Message(MT.HUP, from_=1))
    assert r.role == L
    r.step(Message(MT.READ_INDEX, context=b"x"))
    assert r.read_states[0].index == r.log.committed == 2


def test_read_round_ignores_acks_of_old_rounds() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(2)
    net.isolate(3)
    leader.step(Message(MT.READ_INDEX, context=b"a"))
    take(leader)
    leader.step(Message(MT.HEARTBEAT_RESP, from_=2, to=1, term=leader.term, context=b"ri:999"))
    assert leader.read_states == []
    leader.step(Message(MT.HEARTBEAT_RESP, from_=2, to=1, term=leader.term, context=leader.read_only.current_ctx()))
    assert [rs.request_ctx for rs in leader.read_states] == [b"a"]


# -- leader transfer -----------------------------------------------------------------------------------------------


def test_transfer_to_self_learner_or_unknown_is_ignored() -> None:
    net = Network(*(new_raft(i, [1, 2, 3], learners=[4]) for i in (1, 2, 3, 4)))
    leader = elect(net)
    for target in (1, 4, 9):
        net.step(1, Message(MT.TRANSFER_LEADER, from_=target))
        assert leader.lead_transferee == 0 and leader.role == L


def test_transfer_forwarded_by_a_follower() -> None:
    net = cluster()
    elect(net)
    net.step(2, Message(MT.TRANSFER_LEADER, from_=2))
    assert net.nodes[2].role == L and net.nodes[1].role == F


def test_second_transfer_request_replaces_the_first() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"x")
    leader.step(Message(MT.TRANSFER_LEADER, from_=2))
    leader.step(Message(MT.TRANSFER_LEADER, from_=2))
    assert leader.lead_transferee == 2
    leader.step(Message(MT.TRANSFER_LEADER, from_=3))
    assert leader.lead_transferee == 3


def test_transfer_waits_for_the_transferee_to_catch_up() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(3)
    net.propose(1, b"x")
    net.heal()
    net.step(1, Message(MT.TRANSFER_LEADER, from_=3))
    assert net.nodes[3].role == L and leader.role == F
    assert net.nodes[3].log.last_index() >= 3


# -- membership ----------------------------------------------------------------------------------------------------


def raw_cluster(n: int) -> tuple[dict[int, RawNode], dict[int, MemoryStorage]]:
    storages = {i: storage_with(range(1, n + 1)) for i in range(1, n + 1)}
    nodes = {i: RawNode(Config(id=i, rng=random.Random(i)), storages[i]) for i in storages}
    return nodes, storages


def settle(nodes: dict[int, RawNode], storages: dict[int, MemoryStorage]) -> None:
    for _ in range(100):
        busy = False
        for i, node in list(nodes.items()):
            if not node.has_ready():
                continue
            busy = True
            rd = node.ready()
            storages[i].append(rd.entries)
            if rd.hard_state:
                storages[i].set_hard_state(rd.hard_state)
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    node.apply_conf_change(ConfChange.decode(e.data))
            node.advance(rd)
            for m in rd.messages:
                if m.to in nodes:
                    nodes[m.to].step(m)
        if not busy:
            return


def test_conf_change_validation() -> None:
    r = new_raft(1, voters=[1])
    r.step(Message(MT.HUP, from_=1))
    r.log.applied = r.log.committed
    bad = [ConfChange(ConfChangeType.REMOVE_NODE, 1), ConfChange(ConfChangeType.ADD_LEARNER, 1)]
    for cc in [*bad, ConfChange(ConfChangeType.ADD_VOTER, 0)]:
        with pytest.raises(ProposalDropped) as err:
            r.step(Message(MT.PROP, from_=1, entries=[Entry(type=EntryType.CONF_CHANGE, data=cc.encode())]))
        assert err.value.reason == ProposalDropped.REASON_INVALID
    for garbage in ([], [Entry(type=EntryType.CONF_CHANGE, data=b"junk")]):
        with pytest.raises(ProposalDropped):
            r.step(Message(MT.PROP, from_=1, entries=garbage))
    two = [Entry(type=EntryType.CONF_CHANGE, data=ConfChange(ConfChangeType.ADD_VOTER, 2).encode())] * 2
    with pytest.raises(ProposalDropped):
        r.step(Message(MT.PROP, from_=1, entries=two))
    # Applying a change that would leave no voter is ignored identically on every node.
    assert r.apply_conf_change(bad[0]).voters == [1]


def test_removing_a_voter_lets_a_smaller_quorum_commit() -> None:
    nodes, storages = raw_cluster(3)
    nodes[1].campaign()
    settle(nodes, storages)
    nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    settle(nodes, storages)
    assert nodes[1].status().conf_state.voters == [1, 2]
    del nodes[3]
    nodes[1].propose(b"after")
    settle(nodes, storages)
    assert nodes[2].status().commit == nodes[1].status().commit == 4


def test_removed_leader_steps_down_and_others_elect() -> None:
    nodes, storages = raw_cluster(3)
    nodes[1].campaign()
    settle(nodes, storages)
    nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    settle(nodes, storages)
    assert nodes[1].status().role == F
    with pytest.raises(ProposalDropped):
        nodes[1].propose(b"x")
    del nodes[1]
    for _ in range(30):
        for node in nodes.values():
            node.tick()
        settle(nodes, storages)
    assert sorted(n.status().role for n in nodes.values()) == [F, L]


def test_demoting_a_voter_and_removing_a_learner() -> None:
    nodes, storages = raw_cluster(3)
    nodes[1].campaign()
    settle(nodes, storages)
    nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 3))
    settle(nodes, storages)
    assert nodes[1].status().conf_state.learners == [3]
    assert nodes[1].status().progress[3].is_learner
    nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    settle(nodes, storages)
    assert nodes[2].status().conf_state.voters == [1, 2] and nodes[2].status().conf_state.learners == []


def test_campaign_waits_for_committed_conf_changes_to_be_applied() -> None:
    r = new_raft(1, pre_vote=False)
    r.log.append([Entry(1, 2, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.REMOVE_NODE, 1).encode())])
    r.log.commit_to(2)
    r.step(Message(MT.HUP, from_=1))
    assert r.role == F


def test_transfer_aborted_when_transferee_is_removed() -> None:
    net = cluster()
    leader = elect(net)
    net.isolate(3)
    net.propose(1, b"x")
    leader.step(Message(MT.TRANSFER_LEADER, from_=3))
    assert leader.lead_transferee == 3
    leader.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    assert leader.lead_transferee == 0


# -- the RawNode surface -------------------------------------------------------------------------------------------


def test_local_messages_cannot_be_stepped() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1]))
    for kind in (MT.HUP, MT.BEAT, MT.CHECK_QUORUM, MT.SNAP_STATUS, MT.UNREACHABLE):
        with pytest.raises(StepLocalMessage):
            node.step(Message(kind, from_=1, to=1))


def test_response_from_unknown_peer_is_ignored() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1, 2]))
    node.step(Message(MT.APP_RESP, from_=9, to=1, term=1, index=5))
    assert not node.has_ready()


def test_ready_must_be_advanced_before_the_next_ready() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1]))
    node.campaign()
    rd = node.ready()
    assert not node.has_ready()
    with pytest.raises(RuntimeError):
        node.ready()
    node.raft.log.storage.append(rd.entries)  # type: ignore[attr-defined]
    node.advance(rd)
    assert not node.has_ready()
    node.propose(b"x")
    assert node.has_ready()


def test_status_reports_progress_only_on_the_leader() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1]))
    assert node.status().progress == {}
    node.campaign()
    st = node.status()
    assert st.role == L and st.lead == node.leader_id == 1 and st.progress[1].match == 2


@pytest.mark.parametrize(
    "options",
    [{"id": 0}, {"id": 1, "heartbeat_tick": 0}, {"id": 1, "election_tick": 1}, {"id": 1, "max_inflight_msgs": 0}],
)
def test_invalid_config_is_rejected(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RawNode(Config(**options), storage_with([1]))  # type: ignore[arg-type]


def test_restart_point_must_match_the_hard_state() -> None:
    st = storage_with([1], terms=[1])
    st.set_hard_state(HardState(term=1, commit=9))
    with pytest.raises(ValueError):
        RawNode(Config(id=1), st)


def test_transfer_request_on_a_follower_without_leader_is_dropped() -> None:
    r = new_raft(2)
    r.step(Message(MT.TRANSFER_LEADER, from_=2))
    assert take(r) == [] and r.role == F


def test_removing_a_lagging_voter_commits_what_the_remaining_majority_holds() -> None:
    net = cluster(4)
    leader = elect(net)
    net.isolate(3)
    net.isolate(4)
    net.propose(1, b"x")
    assert leader.log.committed == 2  # 2 of 4 voters hold index 3: no majority
    leader.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 4))
    assert leader.log.committed == 3  # 2 of 3 voters is a majority
    assert any(m.type == MT.APP and m.to == 2 and m.commit == 3 for m in leader.msgs)
