"""Raft messages to and from their wire form (``coord._proto.raftpb``)."""

from __future__ import annotations

from coord._proto.raftpb import raft_pb2
from coord.server.raft import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)


def message_to_pb(m: Message) -> raft_pb2.Message:
    pb = raft_pb2.Message(
        type=int(m.type),
        to=m.to,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
    )
    setattr(pb, "from", m.from_)
    if m.entries:
        pb.entries.extend(raft_pb2.Entry(term=e.term, index=e.index, type=int(e.type), data=e.data) for e in m.entries)
    if m.snapshot is not None:
        meta = m.snapshot.metadata
        pb.snapshot.index = meta.index
        pb.snapshot.term = meta.term
        pb.snapshot.conf_state.voters.extend(meta.conf_state.voters)
        pb.snapshot.conf_state.learners.extend(meta.conf_state.learners)
    return pb


def message_from_pb(pb: raft_pb2.Message, snapshot_data: bytes = b"") -> Message:
    """The Raft message ``pb`` carries. Raises ValueError for an unknown message type."""
    snapshot = None
    if pb.HasField("snapshot"):
        cs = pb.snapshot.conf_state
        meta = SnapshotMetadata(
            conf_state=ConfState(voters=list(cs.voters), learners=list(cs.learners)),
            index=pb.snapshot.index,
            term=pb.snapshot.term,
        )
        snapshot = Snapshot(data=snapshot_data, metadata=meta)
    return Message(
        type=MessageType(pb.type),
        to=pb.to,
        from_=getattr(pb, "from"),
        term=pb.term,
        log_term=pb.log_term,
        index=pb.index,
        entries=[Entry(term=e.term, index=e.index, type=EntryType(e.type), data=e.data) for e in pb.entries],
        commit=pb.commit,
        reject=pb.reject,
        reject_hint=pb.reject_hint,
        snapshot=snapshot,
        context=pb.context,
    )
