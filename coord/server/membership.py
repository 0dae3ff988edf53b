"""Members of the cluster: identity (ids derived as etcd derives them) and the replicated member table.

The member table is part of the state machine: it changes only when a membership entry is applied (a Raft
configuration change, or a member publishing its name and client URLs), so every member holds the same table at the
same applied index, and it travels inside snapshots. The local member's own id and the cluster id are member-local
facts stored in the meta database.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from coord.server.storage import Backend, from_u64, u64

META_MEMBER_ID = b"member_id"
META_CLUSTER_ID = b"cluster_id"
# Member-local meta keys: never copied into, nor replaced by, a snapshot.
LOCAL_META_KEYS = frozenset({META_MEMBER_ID})


@dataclass
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Member:
        data = json.loads(raw)
        return cls(
            id=int(data["id"]),
            name=str(data.get("name", "")),
            peer_urls=[str(u) for u in data.get("peer_urls", [])],
            client_urls=[str(u) for u in data.get("client_urls", [])],
            is_learner=bool(data.get("is_learner", False)),
        )


def _sha1_u64(data: bytes) -> int:
    return int(struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0])


def member_id(peer_urls: list[str], cluster_token: str, salt: bytes = b"") -> int:
    """etcd's member id: the first 8 bytes of sha1(sorted peer URLs + cluster token [+ time for added members])."""
    return _sha1_u64("".join(sorted(peer_urls)).encode() + cluster_token.encode() + salt) or 1


def cluster_id(member_ids: list[int]) -> int:
    """etcd's cluster id: the first 8 bytes of sha1 over the sorted member ids."""
    return _sha1_u64(b"".join(u64(i) for i in sorted(member_ids)))


# -- the replicated member table (written by the applier inside its transaction) -------------------------------------


def load_members(backend: Backend, txn: Any) -> dict[int, Member]:
    with txn.cursor(db=backend.members) as cursor:
        return {from_u64(k): Member.decode(v) for k, v in cursor if k != _REMOVED_PREFIX and len(k) == 8}


def put_member(backend: Backend, txn: Any, member: Member) -> None:
    txn.put(u64(member.id), member.encode(), db=backend.members)


def remove_member(backend: Backend, txn: Any, member_id_: int) -> None:
    txn.delete(u64(member_id_), db=backend.members)
    txn.put(_REMOVED_PREFIX + u64(member_id_), b"", db=backend.members)


def is_removed(backend: Backend, txn: Any, member_id_: int) -> bool:
    return txn.get(_REMOVED_PREFIX + u64(member_id_), db=backend.members) is not None


_REMOVED_PREFIX = b"removed/"


# -- member-local identity ---------------------------------------------------------------------------------------------


def stored_identity(backend: Backend) -> tuple[int, int] | None:
    """(member id, cluster id) if this data dir already belongs to a cluster."""
    txn: Any
    with backend.read() as txn:
        mid = txn.get(META_MEMBER_ID, db=backend.meta)
        cid = txn.get(META_CLUSTER_ID, db=backend.meta)
    if mid is None or cid is None:
        return None
    return from_u64(mid), from_u64(cid)


def store_identity(backend: Backend, txn: Any, member: int, cluster: int) -> None:
    txn.put(META_MEMBER_ID, u64(member), db=backend.meta)
    txn.put(META_CLUSTER_ID, u64(cluster), db=backend.meta)
