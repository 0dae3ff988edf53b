"""Lease TTL checkpoints: leader changes and restarts must not keep a dead lease alive, nor cut a live one short.

Without checkpoints every new leader gives every lease its full TTL again (plus an election timeout), so a lease whose
client died stays alive as long as leaders keep changing. With checkpoints (--lease-checkpoint-interval, short here)
the leader records remaining TTLs through Raft and a new leader starts each lease at its recorded remaining TTL.

Members run as real processes on 127.0.0.1 (coord.testing.Cluster, 50 ms heartbeat, 500 ms election timeout); every
process is stopped by PID when the test ends. Waits are bounded; the only time bound asserted is the lease
guarantee itself (expiry no later than its TTL plus a margin of a few leader changes).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.mvccpb import kv_pb2
from coord.testing import Cluster, start_coord_server
from tests.faults._cluster_ops import channel, leader, status

ELECTION_S = 0.5
CHECKPOINT_FLAGS = ["--lease-checkpoint-interval", "500ms"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(
        "coord", tmp_path, 3, heartbeat_ms=50, election_ms=int(ELECTION_S * 1000), extra_args=CHECKPOINT_FLAGS
    ) as c:
        leader(c, timeout=20)
        yield c


def move_leader(cluster: Cluster, turn: int) -> None:
    """Hand leadership to another member (MoveLeader through the Maintenance API) and wait until all agree."""
    lead = leader(cluster, timeout=20)
    lead_id = status(lead.endpoint).header.member_id
    others = sorted(status(m.endpoint).header.member_id for m in cluster.members if m is not lead)
    target = others[turn % len(others)]
    with channel(lead.endpoint) as ch:
        rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target), timeout=10)
    deadline = time.monotonic() + 20
    while status(leader(cluster, timeout=20).endpoint).header.member_id != target:
        assert time.monotonic() < deadline, f"leadership did not move from {lead_id:x} to {target:x}"
        time.sleep(0.05)


def time_to_live(endpoint: str, lease_id: int) -> rpc_pb2.LeaseTimeToLiveResponse:
    with channel(endpoint) as ch:
        return rpc_pb2_grpc.LeaseStub(ch).LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id), timeout=10)


class Watcher:
    """A watch on a prefix from a revision, read by a thread; ``responses`` gets (monotonic time, response)."""

    def __init__(self, endpoint: str, prefix: bytes, start_revision: int) -> None:
        self.responses: queue.Queue[tuple[float, rpc_pb2.WatchResponse]] = queue.Queue()
        self._done = threading.Event()
        self._channel = grpc.insecure_channel(endpoint)
        create = rpc_pb2.WatchCreateRequest(
            key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1]), start_revision=start_revision
        )

        def requests() -> Iterator[rpc_pb2.WatchRequest]:
            yield rpc_pb2.WatchRequest(create_request=create)
            self._done.wait(120)

        self._call = rpc_pb2_grpc.WatchStub(self._channel).Watch(requests(), timeout=120)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self._call:
                self.responses.put((time.monotonic(), resp))
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self._done.set()
        self._call.cancel()
        self._thread.join(10)
        self._channel.close()


class Renewer:
    """Renews a lease every second through a follower's keep-alive stream (reopened after a leader change refused
    a renewal), until stopped; ``ttls`` are the TTLs answered."""

    def __init__(self, cluster: Cluster, lease_id: int) -> None:
        self.ttls: list[int] = []
        self._stop = threading.Event()
        self._endpoint = next(m for m in cluster.members if m is not leader(cluster, timeout=20)).endpoint
        self._lease_id = lease_id
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _requests(self) -> Iterator[rpc_pb2.LeaseKeepAliveRequest]:
        while not self._stop.wait(1.0):
            yield rpc_pb2.LeaseKeepAliveRequest(ID=self._lease_id)

    def _run(self) -> None:
        deadline = time.monotonic() + 90
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with channel(self._endpoint) as ch:
                    for resp in rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(self._requests(), timeout=90):
                        self.ttls.append(resp.TTL)
            except grpc.RpcError:
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def test_leader_changes_expire_a_dead_lease_and_keep_a_renewed_one(cluster: Cluster) -> None:
    """Fault: leadership moves every 3 s (MoveLeader). Guarantees:
    - a 6 s lease nobody renews expires on time (its TTL plus a margin of two leader changes' worth; without
      checkpoints each move would give it 6.5 s more, keeping it alive until the moves stop), its two keys deleted
      in one revision, the DELETEs seen by a watcher;
    - a 6 s lease renewed every second through a follower never expires;
    - a keep-alive on a checkpointed lease gives it its full TTL again on every member, and the next leader does not
      start it at the old checkpoint (about 15 s of its 20)."""
    ttl = 6
    endpoints = [m.endpoint for m in cluster.members]
    with channel(endpoints[0]) as ch:
        kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
        dead = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=10).ID
        t0 = time.monotonic()
        kept = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=10).ID
        long = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=20), timeout=10).ID
        kv.Put(rpc_pb2.PutRequest(key=b"kept", value=b"1", lease=kept), timeout=10)
        kv.Put(rpc_pb2.PutRequest(key=b"dead/a", value=b"1", lease=dead), timeout=10)
        put = kv.Put(rpc_pb2.PutRequest(key=b"dead/b", value=b"1", lease=dead), timeout=10)
    renewer = Renewer(cluster, kept)
    watcher = Watcher(endpoints[0], b"dead/", put.header.revision + 1)
    deletes: list[kv_pb2.Event] = []
    seen_at = 0.0
    renewed_long = False
    try:
        turn = 0
        next_move = t0 + 3.0
        while time.monotonic() < t0 + 40 and (len(deletes) < 2 or turn < 3):
            try:
                at, resp = watcher.responses.get(timeout=max(0.0, min(0.2, next_move - time.monotonic())))
                if resp.events:
                    deletes.extend(resp.events)
                    seen_at = at
                    assert len(resp.events) == 2, "the lease's keys were not deleted in one revision"
            except queue.Empty:
                pass
            if not renewed_long and time.monotonic() >= t0 + 5.0:
                # The long lease was checkpointed at about 15 s remaining: a keep-alive renews it everywhere.
                renewed_long = True
                with channel(endpoints[1]) as ch:
                    answers = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(
                        iter([rpc_pb2.LeaseKeepAliveRequest(ID=long)]), timeout=10
                    )
                    assert [a.TTL for a in answers] == [20]
                for endpoint in endpoints:
                    assert time_to_live(endpoint, long).TTL >= 18, "a keep-alive did not renew the lease everywhere"
            if time.monotonic() >= next_move and turn < 5:
                move_leader(cluster, turn)
                turn += 1
                next_move = t0 + 3.0 * (turn + 1)
                if turn == 2:
                    # Uncleared, the new leader would start the long lease at its checkpoint (about 15 s).
                    for endpoint in endpoints:
                        remaining = time_to_live(endpoint, long)
                        assert remaining.TTL >= 18 and remaining.grantedTTL == 20, remaining
        with channel(endpoints[2]) as ch:
            assert rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"kept"), timeout=10).kvs
        assert time_to_live(endpoints[2], kept).TTL > 0
    finally:
        watcher.close()
        renewer.stop()
    assert [(e.type, e.kv.key) for e in deletes] == [(kv_pb2.Event.DELETE, b"dead/a"), (kv_pb2.Event.DELETE, b"dead/b")]
    assert deletes[0].kv.mod_revision == deletes[1].kv.mod_revision
    assert seen_at - t0 <= ttl + 6.0, f"the lease outlived its TTL by {seen_at - t0 - ttl:.1f} s across {turn} moves"
    assert time_to_live(endpoints[0], dead).TTL == -1
    assert renewer.ttls and all(t == ttl for t in renewer.ttls), renewer.ttls


def test_checkpoint_survives_a_restart(tmp_path: Path) -> None:
    """Fault: a single member is killed (SIGKILL) and restarted. Guarantee: the lease restarts at its checkpointed
    remaining TTL (stored in LMDB), not its full TTL, and the checkpoint's record format reads back."""
    data = tmp_path / "member"
    server = start_coord_server(data, extra_args=CHECKPOINT_FLAGS)
    try:
        with channel(server.endpoint) as ch:
            lid = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10), timeout=10).ID
        time.sleep(5.0)  # checkpointed at about 5 s remaining
        server.kill()
    finally:
        server.stop()
    restarted = start_coord_server(data, extra_args=CHECKPOINT_FLAGS)
    try:
        remaining = time_to_live(restarted.endpoint, lid)
        # At most the checkpoint (6 s, rounded up) plus the 1 s extension; without it, 10 s plus the extension.
        assert 0 < remaining.TTL <= 7 and remaining.grantedTTL == 10, remaining
    finally:
        restarted.stop()
