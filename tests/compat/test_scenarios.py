"""Hand-written request sequences for etcd behaviours that the random stream reaches only rarely.

Each scenario is a list of (KV method, request) sent in order to a fresh real etcd and a fresh server under test;
every answer must match after the normalisation of ``tests/compat/differential.py``. Found-once bugs and etcd
quirks live here so they are checked on every run, not only on lucky seeds.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2 as pb
from coord.testing import ServerProcess
from tests.compat.conftest import COMPAT_TARGET
from tests.compat.differential import Peer, call, describe, same

Step = tuple[str, Message]


def put(key: bytes, value: bytes = b"v", **kw: object) -> Step:
    return "Put", pb.PutRequest(key=key, value=value, **kw)  # type: ignore[arg-type]


def get(key: bytes, end: bytes = b"", **kw: object) -> Step:
    return "Range", pb.RangeRequest(key=key, range_end=end, **kw)  # type: ignore[arg-type]


def delete(key: bytes, end: bytes = b"", **kw: object) -> Step:
    return "DeleteRange", pb.DeleteRangeRequest(key=key, range_end=end, **kw)  # type: ignore[arg-type]


def txn(
    compare: list[pb.Compare] | None = None, success: list[Step] | None = None, failure: list[Step] | None = None
) -> Step:
    def ops(steps: list[Step] | None) -> list[pb.RequestOp]:
        out = []
        for method, req in steps or []:
            field = {"Range": "request_range", "Put": "request_put", "DeleteRange": "request_delete_range"}.get(
                method, "request_txn"
            )
            out.append(pb.RequestOp(**{field: req}))  # type: ignore[arg-type]
        return out

    return "Txn", pb.TxnRequest(compare=compare or [], success=ops(success), failure=ops(failure))


def compact(rev: int, physical: bool = False) -> Step:
    return "Compact", pb.CompactionRequest(revision=rev, physical=physical)


ALL = (b"\x00", b"\x00")
V = pb.Compare.VERSION
C = pb.Compare.CREATE
M = pb.Compare.MOD
VAL = pb.Compare.VALUE

SCENARIOS: dict[str, list[Step]] = {
    # A from-key delete after a put of the same key in one txn escapes etcd's duplicate-key check; the key ends up
    # with two changes in one revision. Compacting over that revision must work (coord-server crashed here).
    "txn-put-then-delete-all-then-compact": [
        put(b"a", b"x"),
        txn(success=[put(b"a", b"y"), delete(*ALL)]),
        get(*ALL),
        get(b"a", revision=2),
        compact(3),
        get(*ALL),
        put(b"a", b"z"),
        get(b"a"),
    ],
    "txn-put-then-delete-all-last-key-compact-physical": [
        put(b"\xff\xff", b"x"),
        put(b"b", b"x"),
        txn(success=[put(b"\xff\xff", b"y"), delete(*ALL, prev_kv=True)]),
        put(b"c"),
        compact(4, physical=True),
        get(*ALL),
        get(b"\x00", b"\x00", revision=4),
    ],
    "txn-delete-all-then-put": [
        put(b"a", b"x"),
        txn(success=[delete(*ALL), put(b"a", b"y", prev_kv=True)]),
        get(b"a"),
        compact(3),
        get(*ALL),
    ],
    "compactions-at-the-edges": [
        compact(0),
        compact(-1),
        compact(1),
        compact(1),
        put(b"a"),
        put(b"a"),
        compact(4),
        compact(3, physical=True),
        get(b"a", revision=3),
        get(b"a", revision=2),
        get(b"a", revision=4),
        compact(2),
    ],
    "tombstone-and-recreate": [
        put(b"k", b"1"),
        put(b"k", b"2"),
        delete(b"k", prev_kv=True),
        delete(b"k", prev_kv=True),
        put(b"k", b"3", prev_kv=True),
        get(b"k"),
        get(b"k", revision=3),
        get(b"k", revision=4),
        txn([pb.Compare(key=b"k", target=C, result=pb.Compare.EQUAL, create_revision=5)], [get(b"k")], []),
    ],
    "count-limit-and-filters": [
        *(put(bytes([c])) for c in b"abcdefghijklmnop"),
        put(b"c", b"again"),
        put(b"d", b"again"),
        get(b"a", b"z", limit=3),
        get(b"a", b"z", limit=-1),
        get(b"a", b"z", limit=100),
        get(b"a", b"z", min_mod_revision=17),
        get(b"a", b"z", max_mod_revision=3, limit=1),
        get(b"a", b"z", min_create_revision=10, count_only=True),
        get(b"a", b"z", sort_target=pb.RangeRequest.VERSION, limit=2),
        get(b"a", b"z", sort_target=pb.RangeRequest.MOD, sort_order=pb.RangeRequest.DESCEND, limit=2),
        get(b"a", b"z", sort_target=pb.RangeRequest.VALUE, sort_order=pb.RangeRequest.NONE, limit=3),
        get(b"a", b"z", sort_order=pb.RangeRequest.DESCEND, keys_only=True, limit=4),
        get(b"z", b"a"),
        get(b"a", b"a"),
    ],
    "compare-ranges-and-missing-keys": [
        put(b"p/1", b"x"),
        put(b"p/2", b"x"),
        txn([pb.Compare(key=b"p/", range_end=b"p0", target=VAL, result=pb.Compare.EQUAL, value=b"x")], [put(b"r")]),
        txn([pb.Compare(key=b"p/", range_end=b"p0", target=V, result=pb.Compare.GREATER, version=0)], [get(b"p/1")]),
        txn([pb.Compare(key=b"q/", range_end=b"q0", target=V, result=pb.Compare.EQUAL, version=0)], [get(b"q")]),
        txn([pb.Compare(key=b"q/", range_end=b"q0", target=VAL, result=pb.Compare.EQUAL, value=b"")], [get(b"q")]),
        txn([pb.Compare(key=b"missing", target=VAL, result=pb.Compare.NOT_EQUAL, value=b"x")], [], [get(b"p/2")]),
        txn([pb.Compare(key=b"missing", target=M, result=pb.Compare.LESS, mod_revision=1)], [put(b"m")], []),
        txn([pb.Compare(key=b"p/1", target=pb.Compare.LEASE, result=pb.Compare.EQUAL, lease=0)], [delete(b"p/1")]),
        txn([pb.Compare(key=b"p/", range_end=b"\x00", target=M, result=pb.Compare.GREATER, mod_revision=1)]),
    ],
    "nested-txns": [
        put(b"a", b"1"),
        txn(
            [pb.Compare(key=b"a", target=VAL, result=pb.Compare.EQUAL, value=b"1")],
            [
                put(b"b", b"2"),
                txn(
                    [pb.Compare(key=b"b", target=V, result=pb.Compare.EQUAL, version=1)],
                    [get(b"a", b"c"), put(b"c", b"3")],
                    [delete(b"a")],
                ),
                get(b"\x00", b"\x00", count_only=True),
            ],
        ),
        txn(success=[txn(success=[put(b"x")]), txn(success=[put(b"x")])]),
        txn(success=[put(b"y"), txn(failure=[put(b"y")])]),
        get(*ALL),
    ],
    # Open proto3 enums carry values etcd does not know: an unknown sort order sorts nothing but still disables
    # the storage-level limit; unknown compare results/targets make the compare false.
    "unknown-enum-values": [
        put(b"a", b"x"),
        put(b"b", b"a"),
        get(b"a", b"z", sort_order=7, limit=1),
        get(b"a", b"z", sort_order=7, sort_target=pb.RangeRequest.VALUE),
        txn([pb.Compare(key=b"a", result=9, target=V, version=1)], [put(b"s")], [put(b"f")]),  # type: ignore[arg-type]
        txn([pb.Compare(key=b"a", result=pb.Compare.EQUAL, target=9, version=0)], [put(b"s")], [put(b"f")]),  # type: ignore[arg-type]
        get(*ALL),
    ],
    "ignore-value-and-lease": [
        put(b"a", b"1"),
        put(b"a", ignore_value=True, prev_kv=True),
        put(b"a", b"2", ignore_lease=True),
        put(b"missing", ignore_value=True),
        put(b"missing", b"v", ignore_lease=True),
        put(b"a", b"v", ignore_value=True),
        put(b"a", lease=5, ignore_lease=True),
        put(b"a", lease=5),
        txn(success=[put(b"a", ignore_value=True), put(b"b", b"x")]),
        txn(success=[put(b"missing", ignore_value=True)]),
        get(b"a"),
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(ref_server: ServerProcess, target_server: ServerProcess, name: str) -> None:
    problems: list[str] = []
    with Peer(ref_server.endpoint) as a, Peer(target_server.endpoint) as b:
        for index, (method, request) in enumerate(SCENARIOS[name]):
            ra, rb = call(a, method, request), call(b, method, request)
            assert ra.code not in ("UNAVAILABLE", "UNKNOWN"), f"etcd failed on step {index}: {ra}"
            if not same(method, request, ra, rb):
                problems.append(f"step #{index}:\n{describe(method, request, ra, rb, 'etcd', COMPAT_TARGET)}")
                if rb.code in ("UNAVAILABLE", "UNKNOWN", "INTERNAL"):
                    problems.append(f"{COMPAT_TARGET} log tail:\n{target_server.log()[-3000:]}")
                    break
    assert not problems, f"scenario {name}: {len(problems)} differences\n\n" + "\n".join(problems)


def _shape(msg: Message) -> dict[str, object]:
    """Which fields are set (non-default), recursively; values are not compared."""
    out: dict[str, object] = {}
    for field, value in msg.ListFields():
        if field.message_type is not None:
            items = list(value) if field.is_repeated else [value]
            out[field.name] = [_shape(item) for item in items]
        else:
            out[field.name] = "set"
    return out


def test_status_and_member_list(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    """Maintenance.Status and Cluster.MemberList: the same fields are set, and they agree with each other."""
    shapes: dict[str, list[dict[str, object]]] = {"Status": [], "MemberList": []}
    for server in (ref_server, target_server):
        with Peer(server.endpoint) as peer:
            peer.kv.Put(pb.PutRequest(key=b"k", value=b"v"), timeout=10)
            status = peer.maintenance.Status(pb.StatusRequest(), timeout=10)
            members = peer.cluster.MemberList(pb.MemberListRequest(), timeout=10)
        label = "etcd" if server is ref_server else COMPAT_TARGET
        assert status.header.revision == 2, f"{label}: {status}"
        assert status.leader == status.header.member_id == members.header.member_id, f"{label}: {status}"
        assert status.raftAppliedIndex <= status.raftIndex and status.raftAppliedIndex > 0, f"{label}: {status}"
        assert 0 < status.dbSizeInUse <= status.dbSize, f"{label}: {status}"
        assert status.version.count(".") == 2, f"{label}: {status}"
        assert [(m.ID, m.name, list(m.clientURLs), list(m.peerURLs)) for m in members.members] == [
            (status.header.member_id, "compat", [server.url], [f"http://127.0.0.1:{server.peer_port}"])
        ], f"{label}: {members}"
        shapes["Status"].append(_shape(status))
        shapes["MemberList"].append(_shape(members))
    for name, (ref_shape, target_shape) in shapes.items():
        assert target_shape == ref_shape, f"{name} fields set\netcd: {ref_shape}\n{COMPAT_TARGET}: {target_shape}"
