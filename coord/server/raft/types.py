"""Plain data types of the Raft core: entries, messages, states, snapshots and configuration changes.

Every type is a ``@dataclass(slots=True)`` holding only ints, bytes, bools, enums and lists of those, so a peer
layer can serialize them field by field. Node ids are positive ints; ``0`` (``NONE``) means "no node".
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

NONE = 0
"""The id that means "no node" (no leader known, no vote cast)."""


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(slots=True)
class Entry:
    """One log entry. ``index`` and ``term`` identify it (Raft §5.3, Log Matching)."""

    term: int = 0
    index: int = 0
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size in bytes, used for the per-message byte limit."""
        return len(self.data) + 16


class MessageType(enum.IntEnum):
    # Local messages: never sent over the network, only fed to the node's own step().
    HUP = 0  # start an election (pre-vote first when enabled)
    BEAT = 1  # leader: send heartbeats
    CHECK_QUORUM = 2  # leader: step down if a quorum was not active during the last election timeout
    UNREACHABLE = 3  # caller: a peer could not be reached
    SNAP_STATUS = 4  # caller: result of sending a snapshot (reject=True means failure)
    # Messages between peers (PROP, TRANSFER_LEADER and READ_INDEX may also be local).
    PROP = 10
    APP = 11
    APP_RESP = 12
    VOTE = 13
    VOTE_RESP = 14
    PRE_VOTE = 15
    PRE_VOTE_RESP = 16
    SNAP = 17
    HEARTBEAT = 18
    HEARTBEAT_RESP = 19
    TRANSFER_LEADER = 20
    TIMEOUT_NOW = 21
    READ_INDEX = 22
    READ_INDEX_RESP = 23


LOCAL_MESSAGES = frozenset(
    {MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM, MessageType.UNREACHABLE, MessageType.SNAP_STATUS}
)
RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.PRE_VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
    }
)


@dataclass(slots=True)
class ConfState:
    """The membership: voters decide elections and commitment; learners only receive the log."""

    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)


@dataclass(slots=True)
class SnapshotMetadata:
    conf_state: ConfState = field(default_factory=ConfState)
    index: int = 0
    term: int = 0


@dataclass(slots=True)
class Snapshot:
    """State machine contents up to and including ``metadata.index`` (Raft §7)."""

    data: bytes = b""
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)

    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(slots=True)
class Message:
    """A Raft message. ``term == 0`` marks a local message (or a proposal, which carries no term)."""

    type: MessageType
    to: int = NONE
    from_: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


@dataclass(slots=True)
class HardState:
    """What must be durable before any message of the same Ready is sent (Raft figure 2, "persistent state")."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(slots=True)
class SoftState:
    """Volatile state worth reporting: who leads and our role. Need not be persisted."""

    lead: int = NONE
    role: StateRole = StateRole.FOLLOWER


@dataclass(slots=True)
class ReadState:
    """A ReadIndex result: once the state machine has applied ``index``, reads for ``request_ctx`` are linearizable."""

    index: int
    request_ctx: bytes


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0  # also promotes an existing learner
    ADD_LEARNER = 1  # also demotes an existing voter
    REMOVE_NODE = 2


_CC_MAGIC = b"cc1"
_CC_HEADER = struct.Struct(">3sBQ")


@dataclass(slots=True)
class ConfChange:
    """One membership change. Changes are applied one at a time, when the entry is applied (Raft thesis §4.1)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        """Deterministic encoding for the log: magic, type byte, big-endian uint64 node id, then context."""
        return _CC_HEADER.pack(_CC_MAGIC, int(self.type), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Inverse of ``encode``. Raises ValueError on malformed input."""
        if len(data) < _CC_HEADER.size:
            raise ValueError("conf change too short")
        magic, kind, node_id = _CC_HEADER.unpack_from(data)
        if magic != _CC_MAGIC:
            raise ValueError("not a conf change")
        return cls(ConfChangeType(kind), node_id, bytes(data[_CC_HEADER.size :]))


class RaftError(Exception):
    """Base class of the errors raised by the Raft core."""


class ProposalDropped(RaftError):
    """The proposal was not appended. ``reason`` is one of the ``REASON_*`` constants (e.g. no leader)."""

    REASON_NO_LEADER = "no leader"
    REASON_TRANSFERRING = "leadership transfer in progress"
    REASON_CONF_CHANGE_PENDING = "a configuration change is still pending"
    REASON_NOT_MEMBER = "this node is not a member of the cluster"
    REASON_INVALID = "invalid proposal or configuration change"

    def __init__(self, reason: str) -> None:
        super().__init__(f"raft proposal dropped: {reason}")
        self.reason = reason


class StepLocalMessage(RaftError):
    """A local-only message type was passed to ``RawNode.step``."""


class CompactedError(RaftError):
    """The requested index is older than the first available one: it was compacted into a snapshot."""


class UnavailableError(RaftError):
    """The requested index is newer than the last available one."""


class SnapshotOutOfDateError(RaftError):
    """The snapshot being applied is older than the storage's current snapshot."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """The storage cannot produce a snapshot right now; the leader will retry later."""
