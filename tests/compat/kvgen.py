"""Seeded generator of etcd v3 KV requests for the differential test.

One :class:`KvGen` turns a seed into a stream of :class:`Op` (a KV method name and its request). It is steered only by
the seed and by the reference server's answers (fed back through :meth:`KvGen.observe`), so the same seed against a
conforming server always yields the same stream.

Keys and values come from small alphabets so operations collide: most puts overwrite, deletes hit, compares see real
versions. The mix covers puts (prev_kv, ignore_value, ignore_lease, unknown leases), ranges with every option
(single key, prefix, from-key, everything, range_end < key, limit incl. negative, every sort order and target,
serializable, keys_only, count_only, min/max mod/create revision filters, historic revisions: past, current, future,
compacted, exactly the compact revision), deletes (single, ranges, prev_kv), txns (every compare target and result,
compares with range_end, on missing keys, with a mismatched target union, nested txns, duplicate keys, 128 and 129
ops, nested op budgets, empty txns), compactions (past, exactly current, future, already compacted, physical or not)
and invalid requests (empty keys everywhere, values/leases given with ignore_*, request too large).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2

__all__ = ["KEYS", "VALUES", "KvGen", "Op", "prefix_range_end"]

#: The key alphabet: prefixes of each other, neighbours in byte order, and the edge bytes 0x00 and 0xff.
KEYS: tuple[bytes, ...] = (
    b"a",
    b"b",
    b"c",
    b"a/",
    b"a/1",
    b"a/2",
    b"a/3",
    b"b/1",
    b"b/2",
    b"ab",
    b"ba",
    b"c\xff",
    b"\xff",
    b"\xff\xff",
    b"\x00",
    b"\x00a",
    b"a\x00",
)

#: The "wide" profile (every seed divisible by 4) adds 45 keys under one prefix: ranges then return many keys, so
#: limits, `more`, large counts and unstable-sort tie groups get exercised.
WIDE_KEYS: tuple[bytes, ...] = KEYS + tuple(b"w/%02d" % i for i in range(45))

#: Values, including the empty value and non-UTF-8 bytes.
VALUES: tuple[bytes, ...] = (b"", b"x", b"y", b"z", b"xy", b"\x00\xff", b"v" * 100)

#: Bigger than etcd's default --max-request-bytes (1.5 MiB) but below its gRPC receive limit (+512 KiB).
TOO_LARGE_VALUE_SIZE = 1_600_000

SORT_ORDERS = (rpc_pb2.RangeRequest.NONE, rpc_pb2.RangeRequest.ASCEND, rpc_pb2.RangeRequest.DESCEND)
SORT_TARGETS = (
    rpc_pb2.RangeRequest.KEY,
    rpc_pb2.RangeRequest.VERSION,
    rpc_pb2.RangeRequest.CREATE,
    rpc_pb2.RangeRequest.MOD,
    rpc_pb2.RangeRequest.VALUE,
)
COMPARE_RESULTS = (rpc_pb2.Compare.EQUAL, rpc_pb2.Compare.GREATER, rpc_pb2.Compare.LESS, rpc_pb2.Compare.NOT_EQUAL)
COMPARE_TARGETS = (
    rpc_pb2.Compare.VERSION,
    rpc_pb2.Compare.CREATE,
    rpc_pb2.Compare.MOD,
    rpc_pb2.Compare.VALUE,
    rpc_pb2.Compare.LEASE,
)


def prefix_range_end(key: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: increment the last byte below 0xff, dropping trailing 0xff; all 0xff -> b"\\0"."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def _walk_ops(txn: rpc_pb2.TxnRequest) -> list[rpc_pb2.RequestOp]:
    ops: list[rpc_pb2.RequestOp] = []
    for op in [*txn.success, *txn.failure]:
        ops.append(op)
        if op.WhichOneof("request") == "request_txn":
            ops.extend(_walk_ops(op.request_txn))
    return ops


def _avoid_etcd_txn_panic(txn: rpc_pb2.TxnRequest) -> None:
    """Drop ignore_value/ignore_lease from txns where etcd 3.4 would panic instead of answering.

    etcd 3.4 checks ignore_value/ignore_lease puts against the state *before* the txn, then panics ("unexpected error
    during txn") when the key is gone at apply time: after a delete_range earlier in the same txn (a from-key delete
    is not caught by its duplicate-key check), or in a nested txn whose compares came out differently once earlier
    ops had run. There is no oracle for such requests, so they are not generated; puts keep their other fields.
    """
    ops = _walk_ops(txn)
    risky = any(op.WhichOneof("request") in ("request_delete_range", "request_txn") for op in ops)
    if not risky:
        return
    for op in ops:
        if op.WhichOneof("request") == "request_put" and (op.request_put.ignore_value or op.request_put.ignore_lease):
            op.request_put.ignore_value = False
            op.request_put.ignore_lease = False
            op.request_put.lease = 0


@dataclass(frozen=True)
class Op:
    """One request: ``method`` is the KV method name (Range, Put, DeleteRange, Txn, Compact)."""

    method: str
    request: Message
    note: str = ""


class KvGen:
    """Seeded request generator. Call :meth:`next_op`, send it to the reference, then :meth:`observe` its answer."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.profile = "wide" if seed % 4 == 0 else "narrow"
        self.keys = WIDE_KEYS if self.profile == "wide" else KEYS
        self.recent: list[bytes] = []  # keys of recent puts: reads aim at them a third of the time
        self.rev = 1  # current revision of the reference, from response headers
        self.compacted = 0  # last successful compaction revision (0 = never)

    # ---------------------------------------------------------------- state feedback

    def observe(self, op: Op, response: Message | None) -> None:
        """Feed back the reference's answer (None for an error) so later revisions aim at real history."""
        if response is None:
            return
        header = getattr(response, "header", None)
        if header is not None and header.revision > 0:
            self.rev = max(self.rev, int(header.revision))
        if op.method == "Put":
            assert isinstance(op.request, rpc_pb2.PutRequest)
            self.recent = [*self.recent[-7:], bytes(op.request.key)]
        if op.method == "Compact":
            assert isinstance(op.request, rpc_pb2.CompactionRequest)
            self.compacted = max(self.compacted, int(op.request.revision))

    # ---------------------------------------------------------------- building blocks

    def key(self) -> bytes:
        r = self.rng.random()
        if r < 0.3 and self.recent:
            return self.rng.choice(self.recent)
        if r < 0.9:
            return self.rng.choice(self.keys)
        return bytes(self.rng.choice(b"ab/\x00\xff") for _ in range(self.rng.randint(1, 3)))

    def value(self) -> bytes:
        r = self.rng.random()
        if r < 0.95:
            return self.rng.choice(VALUES)
        if r < 0.995:
            return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(1, 4)))
        return b"w" * 65536

    def revision(self) -> tuple[int, str]:
        """A read/compare revision and what kind it is: latest, past, current, future, compacted, exactly-compacted."""
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return rng.choice((0, 0, 0, -1)), "latest"
        if r < 0.55:
            return rng.randint(max(self.compacted, 1), self.rev), "past"
        if r < 0.65:
            return self.rev, "current"
        if r < 0.75:
            return self.rev + rng.randint(1, 3), "future"
        if r < 0.85 and self.compacted > 1:
            return rng.randint(1, self.compacted - 1), "compacted"
        if self.compacted > 0:
            return self.compacted, "exactly-compacted"
        return 1, "first"

    def key_range(self) -> tuple[bytes, bytes, str]:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            return self.key(), b"", "single"
        if r < 0.6:
            k = rng.choice((b"a", b"a/", b"b", b"b/", b"c", b"\xff", b"\x00", b"ab", b"a/1", b"w/", b"w/1", b"w/0"))
            return k, prefix_range_end(k), "prefix"
        if r < 0.7:
            return self.key(), b"\x00", "from-key"
        if r < 0.8:
            return b"\x00", b"\x00", "all"
        a, b = self.key(), self.key()
        return a, b, "range" if a <= b else "range_end<key"

    def range_request(self, *, in_txn: bool = False) -> tuple[rpc_pb2.RangeRequest, str]:
        rng = self.rng
        key, end, kind = self.key_range()
        req = rpc_pb2.RangeRequest(key=key, range_end=end)
        notes = [kind]
        if rng.random() < 0.3:
            req.limit = rng.choice((1, 1, 2, 3, 5, 11, 12, 13, -1))
        if rng.random() < 0.4:
            req.sort_order = rng.choice(SORT_ORDERS)
            req.sort_target = rng.choice(SORT_TARGETS)
        if rng.random() < 0.2:
            req.serializable = True
        if rng.random() < 0.15:
            req.keys_only = True
        if rng.random() < 0.1:
            req.count_only = True
        if rng.random() < 0.15:
            which = rng.choice(("min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"))
            setattr(req, which, rng.randint(0, self.rev + 1))
            if rng.random() < 0.3:
                other = rng.choice(("min_mod_revision", "max_mod_revision", "min_create_revision"))
                setattr(req, other, rng.randint(0, self.rev + 1))
        if rng.random() < 0.3:
            rev, rev_kind = self.revision()
            req.revision = rev
            notes.append(f"rev={rev_kind}")
        if rng.random() < (0.002 if in_txn else 0.01):
            req.key = b""
            notes.append("empty-key")
        return req, " ".join(notes) + (" (in txn)" if in_txn else "")

    def put_request(self, key: bytes | None = None, *, in_txn: bool = False) -> tuple[rpc_pb2.PutRequest, str]:
        rng = self.rng
        req = rpc_pb2.PutRequest(key=self.key() if key is None else key, value=self.value())
        notes = []
        # Inside txns the error-prone flags are rarer: one failing op fails the whole txn.
        flag_p = 0.03 if in_txn else 0.1
        if rng.random() < 0.3:
            req.prev_kv = True
        if rng.random() < flag_p:
            req.ignore_value = True
            if rng.random() < 0.7:
                req.value = b""
            notes.append("ignore_value")
        if rng.random() < flag_p:
            req.ignore_lease = True
            if rng.random() < 0.2:
                req.lease = rng.randint(1, 1 << 40)
            notes.append("ignore_lease")
        if rng.random() < flag_p / 5:
            req.lease = rng.choice((1, 12345, 0x7FFFFFFFFFFFFFFF))
            notes.append("unknown-lease")
        if rng.random() < 0.005:
            req.key = b""
            notes.append("empty-key")
        return req, " ".join(notes)

    def delete_request(self, key: bytes | None = None) -> tuple[rpc_pb2.DeleteRangeRequest, str]:
        rng = self.rng
        if rng.random() < 0.3:
            k, end, kind = self.key_range()
        else:
            k, end, kind = self.key() if key is None else key, b"", "single"
        req = rpc_pb2.DeleteRangeRequest(key=k, range_end=end)
        if rng.random() < 0.4:
            req.prev_kv = True
        if rng.random() < 0.005:
            req.key = b""
            kind += " empty-key"
        return req, kind

    def compare(self) -> rpc_pb2.Compare:
        rng = self.rng
        cmp = rpc_pb2.Compare(key=self.key(), result=rng.choice(COMPARE_RESULTS), target=rng.choice(COMPARE_TARGETS))
        if rng.random() < 0.15:
            cmp.range_end = rng.choice((prefix_range_end(cmp.key), b"\x00", self.key()))
        target = cmp.target
        if rng.random() < 0.05:  # a target union that does not match the target: etcd treats it as zero
            target = rng.choice(COMPARE_TARGETS)
        if target == rpc_pb2.Compare.VERSION:
            cmp.version = rng.randint(0, 4)
        elif target == rpc_pb2.Compare.CREATE:
            cmp.create_revision = rng.randint(0, self.rev + 1)
        elif target == rpc_pb2.Compare.MOD:
            cmp.mod_revision = rng.randint(0, self.rev + 1)
        elif target == rpc_pb2.Compare.VALUE:
            cmp.value = rng.choice(VALUES)
        else:
            cmp.lease = rng.choice((0, 0, 0, 1))
        if rng.random() < 0.003:
            cmp.key = b""
        return cmp

    def request_op(self, depth: int, write_keys: list[bytes]) -> rpc_pb2.RequestOp:
        """One txn op. ``write_keys`` is a shuffled pool: popping from it keeps most txns free of duplicate keys."""
        rng = self.rng
        r = rng.random()

        def write_key() -> bytes:
            if write_keys and rng.random() < 0.85:
                return write_keys.pop()
            return self.key()

        if r < 0.35:
            return rpc_pb2.RequestOp(request_range=self.range_request(in_txn=True)[0])
        if r < 0.7:
            return rpc_pb2.RequestOp(request_put=self.put_request(write_key(), in_txn=True)[0])
        if r < 0.9 or depth >= 2:
            return rpc_pb2.RequestOp(request_delete_range=self.delete_request(write_key())[0])
        return rpc_pb2.RequestOp(request_txn=self.txn_request(depth + 1, write_keys))

    def txn_request(self, depth: int = 0, write_keys: list[bytes] | None = None) -> rpc_pb2.TxnRequest:
        rng = self.rng
        if write_keys is None:
            write_keys = list(self.keys)
            rng.shuffle(write_keys)
        req = rpc_pb2.TxnRequest()
        req.compare.extend(self.compare() for _ in range(rng.choice((0, 1, 1, 2, 3))))
        req.success.extend(self.request_op(depth, write_keys) for _ in range(rng.randint(0, 4)))
        req.failure.extend(self.request_op(depth, write_keys) for _ in range(rng.randint(0, 3)))
        if depth == 0:
            _avoid_etcd_txn_panic(req)
        return req

    def big_txn(self) -> tuple[rpc_pb2.TxnRequest, str]:
        """Txns at and over the --max-txn-ops limit (128), counted per branch, per compare list and nested."""
        rng = self.rng
        kind = rng.choice(("128-ranges", "129-ranges", "129-compares", "129-failure", "nested-over", "nested-at"))
        req = rpc_pb2.TxnRequest()
        get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a"))
        if kind == "128-ranges":
            req.success.extend([get] * 128)
        elif kind == "129-ranges":
            req.success.extend([get] * 129)
        elif kind == "129-compares":
            req.compare.extend([rpc_pb2.Compare(key=b"a", target=rpc_pb2.Compare.VERSION)] * 129)
        elif kind == "129-failure":
            req.failure.extend([get] * 129)
        else:
            inner = rpc_pb2.TxnRequest()
            inner.success.extend([get] * (29 if kind == "nested-over" else 28))
            req.success.extend([get] * 99)
            req.success.append(rpc_pb2.RequestOp(request_txn=inner))
        return req, kind

    def duplicate_txn(self) -> tuple[rpc_pb2.TxnRequest, str]:
        """Txns that write one key twice: put+put, put+delete range, across nested txns, or in different branches."""
        rng = self.rng
        k = rng.choice(self.keys)
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"d"))
        kind = rng.choice(("put-put", "put-delrange", "delrange-put", "nested", "other-branch", "del-del"))
        req = rpc_pb2.TxnRequest()
        if kind == "put-put":
            req.success.extend([put, put])
        elif kind == "put-delrange":
            req.success.extend(
                [
                    put,
                    rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"\x00", range_end=b"\x00")),
                ]
            )
        elif kind == "delrange-put":
            req.success.extend(
                [
                    rpc_pb2.RequestOp(
                        request_delete_range=rpc_pb2.DeleteRangeRequest(key=k[:1], range_end=prefix_range_end(k[:1]))
                    ),
                    put,
                ]
            )
        elif kind == "nested":
            inner = rpc_pb2.TxnRequest(success=[put])
            req.success.extend([put, rpc_pb2.RequestOp(request_txn=inner)])
        elif kind == "other-branch":
            req.compare.append(self.compare())
            req.success.append(put)
            req.failure.append(put)
        else:
            d = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))
            req.success.extend([d, d])
        return req, kind

    # ---------------------------------------------------------------- the stream

    def next_op(self) -> Op:
        rng = self.rng
        r = rng.random()
        if r < 0.30:
            put, note = self.put_request()
            return Op("Put", put, note)
        if r < 0.60:
            rr, note = self.range_request()
            return Op("Range", rr, note)
        if r < 0.70:
            dr, note = self.delete_request()
            return Op("DeleteRange", dr, note)
        if r < 0.895:
            return Op("Txn", self.txn_request(), "txn")
        if r < 0.905:
            txn, note = self.duplicate_txn()
            return Op("Txn", txn, "duplicate " + note)
        if r < 0.91:
            txn, note = self.big_txn()
            return Op("Txn", txn, "max-ops " + note)
        if r < 0.912:
            big = rpc_pb2.PutRequest(key=self.key(), value=b"L" * TOO_LARGE_VALUE_SIZE)
            return Op("Put", big, "too-large")
        if r < 0.92:
            return self.compact_op()
        if r < 0.955:
            return Op("Txn", rpc_pb2.TxnRequest(), "empty txn")
        return self.invalid_op()

    def compact_op(self) -> Op:
        rng = self.rng
        r = rng.random()
        if r < 0.15 and self.compacted > 0:
            rev, kind = rng.randint(max(self.compacted - 3, 1), self.compacted), "already-compacted"
        elif r < 0.25:
            rev, kind = self.rev + rng.randint(1, 3), "future"
        elif r < 0.35:
            rev, kind = self.rev, "current"
        elif r < 0.4:
            rev, kind = rng.choice((0, -1)), "zero-or-negative"
        else:  # lag well behind the head so historic reads have history to read
            low = self.compacted + 1
            rev, kind = rng.randint(low, max(low, self.rev - rng.randint(20, 300))), "past"
        return Op("Compact", rpc_pb2.CompactionRequest(revision=rev, physical=rng.random() < 0.5), f"compact {kind}")

    def invalid_op(self) -> Op:
        rng = self.rng
        kind = rng.choice(
            (
                "range-empty-key",
                "range-empty-key-from",
                "put-empty-key",
                "delete-empty-key",
                "txn-compare-empty-key",
                "txn-put-empty-key",
                "txn-range-empty-key",
                "put-value-and-ignore_value",
                "put-lease-and-ignore_lease",
                "put-ignore_value-missing",
                "put-unknown-lease",
                "txn-put-unknown-lease",
                "txn-put-ignore_value-missing",
            )
        )
        k = self.key()
        if kind == "range-empty-key":
            return Op("Range", rpc_pb2.RangeRequest(key=b""), kind)
        if kind == "range-empty-key-from":
            return Op("Range", rpc_pb2.RangeRequest(key=b"", range_end=b"\x00"), kind)
        if kind == "put-empty-key":
            return Op("Put", rpc_pb2.PutRequest(key=b"", value=b"x"), kind)
        if kind == "delete-empty-key":
            return Op("DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"", range_end=rng.choice((b"", b"\x00"))), kind)
        if kind == "txn-compare-empty-key":
            return Op("Txn", rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"")]), kind)
        if kind == "txn-put-empty-key":
            op = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b""))
            return Op("Txn", rpc_pb2.TxnRequest(failure=[op]), kind)
        if kind == "txn-range-empty-key":
            op = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b""))
            return Op("Txn", rpc_pb2.TxnRequest(success=[op]), kind)
        if kind == "put-value-and-ignore_value":
            return Op("Put", rpc_pb2.PutRequest(key=k, value=b"v", ignore_value=True), kind)
        if kind == "put-lease-and-ignore_lease":
            return Op("Put", rpc_pb2.PutRequest(key=k, lease=7, ignore_lease=True), kind)
        if kind == "put-ignore_value-missing":
            return Op("Put", rpc_pb2.PutRequest(key=b"missing/" + k, ignore_value=True), kind)
        if kind == "put-unknown-lease":
            return Op("Put", rpc_pb2.PutRequest(key=k, value=b"v", lease=0x1234), kind)
        if kind == "txn-put-unknown-lease":
            op = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, lease=0x1234))
            return Op("Txn", rpc_pb2.TxnRequest(success=[op]), kind)
        op = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"missing/" + k, ignore_value=True))
        return Op("Txn", rpc_pb2.TxnRequest(success=[op]), kind)
