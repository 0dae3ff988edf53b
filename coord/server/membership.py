"""Member and cluster identity: ids derived as etcd derives them, fixed at first start and kept in the meta db."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from coord.server.storage import Backend, from_u64, u64

META_MEMBER_ID = b"member_id"
META_CLUSTER_ID = b"cluster_id"


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool = False


def _sha1_u64(data: bytes) -> int:
    return int(struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0])


def member_id(peer_urls: list[str], cluster_token: str) -> int:
    """etcd's member id: the first 8 bytes of sha1(sorted peer URLs + cluster token)."""
    return _sha1_u64("".join(sorted(peer_urls)).encode() + cluster_token.encode())


def cluster_id(member_ids: list[int]) -> int:
    """etcd's cluster id: the first 8 bytes of sha1 over the sorted member ids."""
    return _sha1_u64(b"".join(u64(i) for i in sorted(member_ids)))


def load_or_create_identity(backend: Backend, peer_urls: list[str], cluster_token: str) -> tuple[int, int]:
    """(member id, cluster id) as stored; on a fresh data dir, derive them and store them."""
    txn: Any
    with backend.read() as txn:
        mid = txn.get(META_MEMBER_ID, db=backend.meta)
        cid = txn.get(META_CLUSTER_ID, db=backend.meta)
    if mid is not None and cid is not None:
        return from_u64(mid), from_u64(cid)
    new_member = member_id(peer_urls, cluster_token)
    new_cluster = cluster_id([new_member])
    with backend.write() as txn:
        txn.put(META_MEMBER_ID, u64(new_member), db=backend.meta)
        txn.put(META_CLUSTER_ID, u64(new_cluster), db=backend.meta)
    return new_member, new_cluster
