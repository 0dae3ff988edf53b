"""Bootstrapping the first members of a new cluster: what each writes to its empty (or restored) store.

Used by ``MemberServer`` when it starts with ``--initial-cluster-state new`` on an empty data dir, and by ``coord-server
snapshot restore``, which bootstraps a new cluster on top of a restored state machine. Every initial member computes
the same member ids (etcd's: from the peer URLs and the cluster token), the same cluster id, the same member table and
the same Raft starting point, so the members agree without talking to each other first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coord.server.applier import META_APPLIED
from coord.server.membership import Member, cluster_id, member_id, put_member, store_identity
from coord.server.raft import ConfState, SnapshotMetadata
from coord.server.storage import Backend, u64
from coord.server.storage.raft_storage import RaftStorage


class BootstrapError(ValueError):
    """The initial cluster flags contradict each other (the message names the flags)."""


@dataclass(frozen=True)
class NewCluster:
    """This member's id, the cluster id, and the Raft snapshot record the log starts after (index 1, term 1,
    every initial member a voter)."""

    member_id: int
    cluster_id: int
    raft: SnapshotMetadata


def check_initial_cluster(initial: Mapping[str, Sequence[str]], name: str, advertise_peer_urls: Sequence[str]) -> None:
    """Raise :class:`BootstrapError` unless ``name`` is in ``initial`` with exactly ``advertise_peer_urls``."""
    if name not in initial:
        raise BootstrapError(f"--initial-cluster has no member named {name!r}")
    if sorted(initial[name]) != sorted(advertise_peer_urls):
        raise BootstrapError(
            f"--initial-cluster lists {name}={','.join(initial[name])}, but --initial-advertise-peer-urls is "
            f"{','.join(advertise_peer_urls)}"
        )


def bootstrap_new_cluster(
    backend: Backend, txn: Any, initial: Mapping[str, Sequence[str]], name: str, token: str
) -> NewCluster:
    """Write, in ``txn`` (a write transaction), what member ``name`` of a brand-new cluster starts from: the member
    table of ``initial`` ({name: peer URLs}), this member's identity, applied index 1, and the Raft hard state and
    snapshot record. Call :meth:`RaftStorage.bootstrapped` with the returned ``raft`` once ``txn`` committed, if a
    RaftStorage is already open on ``backend``.

    Client URLs are not part of the table yet: each member publishes its own through Raft once a leader exists, so
    the replicated state stays identical on every member. Raises KeyError when ``name`` is not in ``initial``.
    """
    ids = {member: member_id(list(urls), token) for member, urls in initial.items()}
    mine, cid = ids[name], cluster_id(list(ids.values()))
    for member, urls in initial.items():
        put_member(backend, txn, Member(ids[member], member, list(urls)))
    store_identity(backend, txn, mine, cid)
    txn.put(META_APPLIED, u64(1), db=backend.meta)
    raft = RaftStorage(backend).bootstrap(txn, ConfState(voters=sorted(ids.values())))
    return NewCluster(mine, cid, raft)
