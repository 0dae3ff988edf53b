"""Pure Raft consensus core: no asyncio, sockets, files or wall clock; randomness comes from ``Config.rng``.

Drive a ``RawNode`` with ``tick``/``step``/``propose``; handle each ``Ready`` in the order its fields document
(persist, send, apply), then ``advance``. See ``rawnode.py`` for the loop.
"""

from .config import Config
from .progress import ProgressState
from .rawnode import ProgressStatus, RawNode, Ready, Status
from .storage import MemoryStorage, Storage
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
    RaftError,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    SoftState,
    StateRole,
    StepLocalMessage,
    UnavailableError,
)

__all__ = [
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressStatus",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "StateRole",
    "Status",
    "StepLocalMessage",
    "Storage",
    "UnavailableError",
]
