"""The log (storage + unstable suffix) and MemoryStorage: the guarantees their docstrings state."""

from __future__ import annotations

import random

import pytest

from coord.server.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from coord.server.raft.log import RaftLog
from coord.server.raft.progress import Progress
from coord.server.raft.quorum import VoteResult, committed_index, vote_result
from coord.server.raft.raft import Raft
from coord.server.raft.storage import limit_size
from tests.raft.helpers import new_raft, storage_with, take


def ents(*terms: int, start: int = 2) -> list[Entry]:
    return [Entry(term=t, index=start + i, data=b"x" * 10) for i, t in enumerate(terms)]


def test_memory_storage_bounds() -> None:
    st = storage_with([1], terms=[1, 2, 2])
    assert (st.first_index(), st.last_index(), st.term(1), st.term(4)) == (2, 4, 1, 2)
    with pytest.raises(CompactedError):
        st.entries(1, 3, 100)
    with pytest.raises(UnavailableError):
        st.entries(2, 6, 100)
    with pytest.raises(CompactedError):
        st.term(0)
    with pytest.raises(UnavailableError):
        st.term(5)
    assert len(st.entries(2, 5, 1)) == 1  # at least one entry whatever the byte limit
    assert len(st.entries(2, 5, 2 * Entry(data=b"e2").size())) == 2


def test_memory_storage_compaction_and_snapshots() -> None:
    st = storage_with([1], terms=[1, 2, 2])
    snap = st.create_snapshot(3, ConfState([1]), b"sm")
    assert (snap.metadata.index, snap.metadata.term) == (3, 2)
    st.compact(3)
    assert st.first_index() == 4 and st.term(3) == 2
    for bad in (lambda: st.compact(3), lambda: st.compact(9), lambda: st.create_snapshot(2, ConfState(), b"")):
        with pytest.raises((CompactedError, UnavailableError, SnapshotOutOfDateError)):
            bad()
    with pytest.raises(UnavailableError):
        st.create_snapshot(9, ConfState(), b"")
    with pytest.raises(SnapshotOutOfDateError):
        st.apply_snapshot(Snapshot(metadata=SnapshotMetadata(index=2, term=1)))
    st.apply_snapshot(Snapshot(metadata=SnapshotMetadata(ConfState([1, 2]), index=10, term=3)))
    assert (st.first_index(), st.last_index(), st.initial_state()[1].voters) == (11, 10, [1, 2])


def test_memory_storage_append_truncates_conflicts_and_skips_compacted() -> None:
    st = storage_with([1], terms=[1, 1, 1])
    st.append(ents(2, 2, start=3))
    assert [st.term(i) for i in range(2, 5)] == [1, 2, 2]
    st.compact(3)
    st.append(ents(3, 3, 3, start=2))  # the first two are compacted already
    assert (st.last_index(), st.term(4)) == (4, 3)
    st.append(ents(1, start=1))  # entirely compacted: ignored
    st.append([])
    with pytest.raises(UnavailableError):
        st.append(ents(2, start=9))


def test_limit_size() -> None:
    e = ents(1, 1, 1)
    assert limit_size([], 1) == []
    assert limit_size(e, 1) == e[:1]
    assert limit_size(e, 10_000) == e


def test_log_slices_span_storage_and_unstable() -> None:
    log = RaftLog(storage_with([1], terms=[1, 1]))
    log.append(ents(2, 2, start=4))
    assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
    assert [e.index for e in log.slice(2, 6, max_bytes=1)] == [2]
    assert log.entries(9) == [] and log.slice(3, 3) == []
    with pytest.raises(CompactedError):
        log.slice(1, 3)
    with pytest.raises(UnavailableError):
        log.slice(2, 9)
    with pytest.raises(UnavailableError):
        log.term(9)
    log.storage.compact(2)  # type: ignore[attr-defined]
    with pytest.raises(CompactedError):
        log.term(1)


def test_unstable_truncation_in_the_middle_and_before_offset() -> None:
    log = RaftLog(storage_with([1], terms=[1]))
    log.append(ents(1, 1, 1, start=3))
    log.append(ents(2, start=4))
    assert [(e.index, e.term) for e in log.unstable.entries] == [(3, 1), (4, 2)]
    log.append(ents(3, start=2))
    assert log.unstable.offset == 2 and log.last_index() == 2
    log.unstable.stable_to(9, 9)  # unknown index: nothing happens
    assert log.unstable.entries


def test_log_never_loses_committed_entries() -> None:
    log = RaftLog(storage_with([1], terms=[1, 1]))
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.append(ents(2, start=3))
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, ents(2, 2, start=2))
    with pytest.raises(AssertionError):
        log.commit_to(9)
    with pytest.raises(AssertionError):
        log.applied_to(9)
    log.applied_to(0)
    assert log.applied == 1


def test_unstable_snapshot_is_visible_until_persisted() -> None:
    log = RaftLog(storage_with([1], terms=[1]))
    snap = Snapshot(metadata=SnapshotMetadata(ConfState([1]), index=7, term=3))
    log.restore(snap)
    assert log.snapshot() is snap
    assert (log.first_index(), log.last_index(), log.term(7), log.committed) == (8, 7, 3, 7)
    assert log.unstable.maybe_term(5) is None


def test_conf_change_codec_round_trips_and_rejects_garbage() -> None:
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 2**64 - 1, b"ctx")
    assert ConfChange.decode(cc.encode()) == cc
    with pytest.raises(ValueError):
        ConfChange.decode(b"cc")
    with pytest.raises(ValueError):
        ConfChange.decode(b"xx1" + cc.encode()[3:])


def test_quorum_math() -> None:
    assert committed_index([]) == 0
    assert committed_index([5, 3, 9]) == 5
    assert committed_index([5, 3, 9, 1]) == 3
    assert vote_result(set(), {}) == VoteResult.WON
    assert vote_result({1, 2, 3}, {1: True, 2: False}) == VoteResult.PENDING
    assert vote_result({1, 2, 3}, {1: False, 2: False}) == VoteResult.LOST


def test_progress_repr_and_stale_rejections() -> None:
    pr = Progress(5, 4, is_learner=True)
    assert "learner PROBE" in repr(pr)
    assert not pr.maybe_decrease_to(2, 0)  # not the index we probed: stale
    pr.match = 4
    pr.become_replicate()
    assert not pr.maybe_decrease_to(3, 0)


def test_config_without_byte_limit_means_unlimited() -> None:
    cfg = Config(id=1, max_size_per_msg=0)
    cfg.validate()
    assert cfg.max_size_per_msg > 1 << 40


class FlakyStorage(MemoryStorage):
    def snapshot(self) -> Snapshot:
        raise SnapshotTemporarilyUnavailableError("busy")


def test_leader_retries_later_when_no_snapshot_is_available() -> None:
    st = FlakyStorage()
    st.apply_snapshot(Snapshot(metadata=SnapshotMetadata(ConfState([1, 2]), index=5, term=1)))
    leader = Raft(Config(id=1, rng=random.Random(1)), st)
    leader.become_candidate()
    leader.become_leader()
    take(leader)
    pr = leader.tracker.progress[2]
    pr.next, pr.recent_active = 3, True
    assert leader.send_append(2) is False


def test_removed_node_cannot_propose_and_ignores_stale_responses() -> None:
    r = new_raft(1, voters=[1, 2])
    r.become_candidate()
    r.become_leader()
    r.apply_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 3))
    r.log.applied = r.log.committed
    r.tracker.progress.pop(r.id)
    with pytest.raises(ProposalDropped) as err:
        r.step(Message(MessageType.PROP, from_=1, entries=[Entry(data=b"x")]))
    assert err.value.reason == ProposalDropped.REASON_NOT_MEMBER
    r.step(Message(MessageType.APP_RESP, from_=9, to=1, term=r.term, index=3))


def test_single_voter_read_rounds_complete_at_once() -> None:
    r = new_raft(1, voters=[1], learners=[2])
    r.step(Message(MessageType.HUP, from_=1))
    r.read_only.add(__import__("coord.server.raft.readonly", fromlist=["ReadRequest"]).ReadRequest(b"q", 2))
    r._start_read_round()
    assert [m.type for m in take(r) if m.type == MessageType.READ_INDEX_RESP] == [MessageType.READ_INDEX_RESP]


def test_rawnode_reports_snapshot_only_for_known_peers() -> None:
    node = RawNode(Config(id=1, rng=random.Random(1)), storage_with([1, 2]))
    node.report_snapshot(9, True)
    node.report_unreachable(9)
    node.report_snapshot(2, False)  # not in SNAPSHOT state: no effect
    assert node.raft.tracker.progress[2].next == 2
