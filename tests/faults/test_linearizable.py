"""End-to-end linearizability of the KV API under faults, checked Jepsen-style with tests/faults/lincheck.py.

Fault: a nemesis thread SIGKILLs the leader and restarts it, cuts the leader off (every message to it blackholed by
its peer proxy) and heals it, and in the long run also delays every peer message, kills followers, partitions
followers, resets the leader's connections and crashes the whole cluster, while clients write, read and
compare-and-set a few keys through every member.
Guarantee: every key's history (puts, linearizable Range reads, Txn compare-and-set) is linearizable, across leader
failures and partitions, on whichever member a client talks to; the members converge afterwards.

Clients record each operation with ``time.monotonic_ns`` taken just before sending and just after the answer. Every
written value is unique. A cas is one Txn: compare the value (or, from absent, create_revision == 0), put on success,
range the key on failure (so a failed cas reports the value it saw and the checker verifies it). A write or cas
that ends in a gRPC error is INDETERMINATE (etcd's "request timed out" and "leader changed", deadline exceeded,
UNAVAILABLE after sending, even "no leader": the request may have reached a leader's log before the error, and be
committed later). The one definite failure is gRPC's "failed to connect to all addresses" (UNAVAILABLE raised by the
client before any byte was sent, e.g. to a killed member): FAILED, so its value must never be seen. Counting every
other error as indeterminate can only make the checker more lenient, never raise a false alarm. A read that fails
has no effect and is dropped.

The same harness runs against a 3-member real etcd as a self-check: it must pass there.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

import coord
from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import Cluster, ServerProcess
from tests.conftest import require_etcd
from tests.faults._cluster_ops import leader, wait_converged
from tests.faults.lincheck import Op, Outcome, Report, Value, Verdict, check, check_key, format_history, minimise

KEYS = [f"lin/k{i}" for i in range(4)]
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


@dataclass(frozen=True)
class Plan:
    """A run: the nemesis injects ``faults`` in turn (each held ``fault_s``, ``quiet_s`` apart), starting after
    ``quiet_s``; ``clients`` threads work from the start until ``quiet_s`` after the last fault healed, each doing at
    most ``ops_per_client`` operations and never for longer than ``max_s``."""

    clients: int
    ops_per_client: int
    faults: tuple[str, ...]
    max_s: float = 120.0
    fault_s: float = 2.5
    quiet_s: float = 1.5
    op_timeout_s: float = 1.5
    think_s: float = 0.01


@dataclass
class Recorder:
    """The history, appended to by every client thread."""

    ops: list[Op] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: Op, error: grpc.RpcError | None = None) -> None:
        with self.lock:
            self.ops.append(op)
            if error is not None:
                self.errors[f"{op.kind}: {error.code().name} {error.details()}"] += 1


def _cas_request(key: bytes, expected: Value, new: str) -> rpc_pb2.TxnRequest:
    if expected is None:
        compare = rpc_pb2.Compare(
            key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL, create_revision=0
        )
    else:
        compare = rpc_pb2.Compare(
            key=key, target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL, value=expected.encode()
        )
    return rpc_pb2.TxnRequest(
        compare=[compare],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=new.encode()))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
    )


def write_outcome(error: grpc.RpcError) -> Outcome:
    """FAILED when gRPC could not connect to the member at all (the request never left this process: the channel
    had no connection to send it on), else INDETERMINATE."""
    details = error.details() or ""
    if error.code() is grpc.StatusCode.UNAVAILABLE and details.startswith("failed to connect to all addresses"):
        return Outcome.FAILED
    return Outcome.INDETERMINATE


def _value(kvs: object) -> Value:
    items = list(kvs)  # type: ignore[call-overload]
    return items[0].value.decode() if items else None


def read_op(stub: rpc_pb2_grpc.KVStub, client: int, key: str, timeout: float, recorder: Recorder) -> tuple[bool, Value]:
    """A linearizable Range of ``key``, recorded; returns whether it succeeded, and the value read."""
    start = time.monotonic_ns()
    try:
        resp = stub.Range(rpc_pb2.RangeRequest(key=key.encode(), serializable=False), timeout=timeout)
    except grpc.RpcError as exc:
        recorder.add(Op.read(client, key, None, start, time.monotonic_ns(), Outcome.FAILED), exc)
        return False, None
    value = _value(resp.kvs)
    recorder.add(Op.read(client, key, value, start, time.monotonic_ns()))
    return True, value


class Client(threading.Thread):
    """One client: random write/read/cas on random keys, through its home member (``id % members`` at first, the
    next member after any error; one op in ten through a random member)."""

    def __init__(
        self, cid: int, endpoints: list[str], plan: Plan, recorder: Recorder, stop: threading.Event, seed: int
    ) -> None:
        super().__init__(name=f"lin-client-{cid}", daemon=True)
        self.cid, self.endpoints, self.plan, self.recorder, self.stop_event = cid, endpoints, plan, recorder, stop
        self.rng = random.Random(seed)
        self.known: dict[str, Value] = {}
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test: a harness bug must not look like a pass
            self.failure = exc

    def _run(self) -> None:
        channels = [grpc.insecure_channel(ep, options=_CHANNEL_OPTIONS) for ep in self.endpoints]
        stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
        home = self.cid % len(stubs)
        deadline = time.monotonic() + self.plan.max_s
        try:
            for seq in range(self.plan.ops_per_client):
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    return
                member = home if self.rng.random() < 0.9 else self.rng.randrange(len(stubs))
                if not self._one(stubs[member], seq):
                    home = (home + 1) % len(stubs)
                    self.stop_event.wait(0.05)
                elif self.plan.think_s:
                    self.stop_event.wait(self.rng.uniform(0, self.plan.think_s))
        finally:
            for ch in channels:
                ch.close()

    def _one(self, stub: rpc_pb2_grpc.KVStub, seq: int) -> bool:
        """One random operation, recorded; False when it ended in an error."""
        key = self.rng.choice(KEYS)
        roll = self.rng.random()
        timeout = self.plan.op_timeout_s
        if roll < 0.45:
            ok, value = read_op(stub, self.cid, key, timeout, self.recorder)
            if ok:
                self.known[key] = value
            return ok
        new = f"c{self.cid}.{seq}"
        start = time.monotonic_ns()
        if roll < 0.7:
            try:
                stub.Put(rpc_pb2.PutRequest(key=key.encode(), value=new.encode()), timeout=timeout)
            except grpc.RpcError as exc:
                outcome = write_outcome(exc)
                end = time.monotonic_ns() if outcome is Outcome.FAILED else None
                self.recorder.add(Op.write(self.cid, key, new, start, end, outcome), exc)
                return False
            self.recorder.add(Op.write(self.cid, key, new, start, time.monotonic_ns()))
            self.known[key] = new
            return True
        expected = self.known.get(key)
        try:
            resp = stub.Txn(_cas_request(key.encode(), expected, new), timeout=timeout)
        except grpc.RpcError as exc:
            outcome = write_outcome(exc)
            end = time.monotonic_ns() if outcome is Outcome.FAILED else None
            self.recorder.add(Op.cas(self.cid, key, expected, new, start, end, outcome), exc)
            return False
        end = time.monotonic_ns()
        if resp.succeeded:
            self.recorder.add(Op.cas(self.cid, key, expected, new, start, end, succeeded=True))
            self.known[key] = new
        else:
            observed = _value(resp.responses[0].response_range.kvs)
            self.recorder.add(Op.cas(self.cid, key, expected, new, start, end, succeeded=False, observed=observed))
            self.known[key] = observed
        return True


class Nemesis(threading.Thread):
    """Injects ``plan.faults`` in turn: ``kill`` (SIGKILL the leader, restart it), ``kill-follower``, ``crash-all``
    (SIGKILL every member, restart them), ``partition`` (blackhole every message to the leader, then heal),
    ``partition-follower``, ``cut`` (reset the leader's inbound peer connections and refuse new ones), ``delay``
    (hold every peer message 50-150 ms). Always leaves every member running and every proxy healed."""

    def __init__(self, cluster: Cluster, plan: Plan, stop: threading.Event, seed: int) -> None:
        super().__init__(name="lin-nemesis", daemon=True)
        self.cluster, self.plan, self.stop_event = cluster, plan, stop
        self.rng = random.Random(seed)
        self.log: list[str] = []
        self.failure: BaseException | None = None
        self._origin = time.monotonic()

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self._origin:6.2f}s {text}")

    def run(self) -> None:
        try:
            for fault in self.plan.faults:
                if self.stop_event.wait(self.plan.quiet_s):
                    return
                self._inject(fault)
        except BaseException as exc:
            self.failure = exc
        finally:
            self._repair()

    def _inject(self, fault: str) -> None:
        c = self.cluster
        lead = leader(c, timeout=20)
        if fault in ("kill", "kill-follower"):
            victim = lead if fault == "kill" else self.rng.choice([m for m in c.members if m is not lead])
            self.note(f"{fault}: SIGKILL {victim.extra['name']}")
            victim.kill()
            self._hold(victim)
            victim.restart()
            self.note(f"{fault}: restarted {victim.extra['name']}")
        elif fault == "crash-all":
            self.note("crash-all: SIGKILL every member")
            for member in c.members:
                member.kill()
            self.stop_event.wait(self.plan.fault_s / 2)
            for member in c.members:
                member.restart()
            self.note("crash-all: restarted every member")
        elif fault in ("partition", "partition-follower", "cut"):
            victim = lead if fault != "partition-follower" else self.rng.choice([m for m in c.members if m is not lead])
            proxy = c.proxies[c.members.index(victim)]
            how = "reset and refuse connections" if fault == "cut" else "blackhole messages"
            self.note(f"{fault}: {how} to {victim.extra['name']} (leader {lead.extra['name']})")
            if fault == "cut":
                proxy.cut()
            else:
                proxy.blackhole()
            self._hold(victim)
            proxy.heal()
            self.note(f"{fault}: healed")
        elif fault == "delay":
            delay = self.rng.uniform(0.05, 0.15)
            self.note(f"delay: every peer message held {delay * 1000:.0f} ms")
            for proxy in c.proxies:
                proxy.delay(delay)
            self.stop_event.wait(self.plan.fault_s)
            for proxy in c.proxies:
                proxy.heal()
            self.note("delay: healed")
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def _hold(self, victim: ServerProcess) -> None:
        """Keep the fault for ``plan.fault_s``, noting the leader the other members agree on meanwhile."""
        until = time.monotonic() + self.plan.fault_s
        try:
            lead = self.cluster.wait_leader(self.plan.fault_s, exclude=victim)
            self.note(f"  the others follow {lead.extra['name']}")
        except TimeoutError:
            self.note("  the others agree on no leader while the fault lasts")
        self.stop_event.wait(max(0.0, until - time.monotonic()))

    def _repair(self) -> None:
        for proxy in self.cluster.proxies:
            proxy.heal()
        for member in self.cluster.members:
            if not member.alive():
                member.restart()


@dataclass
class Run:
    history: list[Op]
    report: Report
    errors: Counter[str]
    faults: list[str]
    healed_ns: int  # when the nemesis had healed its last fault
    watched: list[tuple[int, str, bytes, bytes]]  # (revision, type, key, value) seen by a watch open all along


def _final_reads(members: list[ServerProcess], recorder: Recorder) -> None:
    """Every key read linearizably on every member, once the cluster is whole again (part of the history)."""
    for i, member in enumerate(members):
        with grpc.insecure_channel(member.endpoint, options=_CHANNEL_OPTIONS) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            for key in KEYS:
                for _attempt in range(5):
                    if read_op(stub, 1000 + i, key, 5.0, recorder)[0]:
                        break
                    time.sleep(0.2)


class WatchCollector(threading.Thread):
    """A coord SDK watch on every key, from revision 1, open through all the faults (the SDK resumes it on another
    member after an error); collects every event until :meth:`finish` sees it caught up with ``revision``."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(name="watch-collector", daemon=True)
        self.events: list[tuple[int, str, bytes, bytes]] = []
        self.failure: BaseException | None = None
        self._client = coord.connect(endpoints, timeout=5)
        self._watcher = self._client.watch("lin/", prefix=True, start_revision=1)
        self._until: int | None = None
        self._deadline = 0.0

    def run(self) -> None:
        try:
            while self._until is None or self._watcher.revision < self._until:
                if self._until is not None and time.monotonic() > self._deadline:
                    raise AssertionError(f"the watch did not reach revision {self._until}")
                try:
                    event = self._watcher.next(timeout=0.5)
                except TimeoutError:
                    continue
                self.events.append((event.revision, event.type.value, event.key, event.kv.value))
        except BaseException as exc:  # reported by finish()
            self.failure = exc

    def finish(self, revision: int, timeout: float = 60.0) -> list[tuple[int, str, bytes, bytes]]:
        self._deadline = time.monotonic() + timeout
        self._until = revision
        self.join(timeout + 5)
        self._watcher.cancel()
        self._client.close()
        assert not self.is_alive(), "the watch collector did not stop"
        if self.failure is not None:
            raise AssertionError(f"the watch failed: {self.failure!r}") from self.failure
        return self.events


def run_workload(cluster: Cluster, plan: Plan, seed: int) -> Run:
    """Drive the clients and the nemesis over ``cluster``; returns the history and its check."""
    leader(cluster, timeout=30)
    recorder = Recorder()
    stop = threading.Event()
    endpoints = [m.endpoint for m in cluster.members]
    collector = WatchCollector(endpoints)
    collector.start()
    clients = [Client(c, endpoints, plan, recorder, stop, seed * 100 + c) for c in range(plan.clients)]
    nemesis = Nemesis(cluster, plan, stop, seed)
    for thread in (*clients, nemesis):
        thread.start()
    try:
        nemesis.join(plan.max_s)
        healed_ns = time.monotonic_ns()
        # Let the clients run on the healed cluster a little, then stop them.
        stop.wait(plan.quiet_s)
    finally:
        stop.set()
        for thread in (*clients, nemesis):
            thread.join(60)
    threads: list[Client | Nemesis] = [*clients, nemesis]
    for thread in threads:
        assert not thread.is_alive(), f"{thread.name} did not stop"
        if thread.failure is not None:
            raise AssertionError(f"{thread.name} failed: {thread.failure!r}") from thread.failure
    leader(cluster, timeout=30)
    _final_reads(cluster.members, recorder)
    wait_converged(cluster, timeout=30)
    with grpc.insecure_channel(leader(cluster, timeout=30).endpoint) as ch:
        current = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"lin/"), timeout=10).header.revision
    watched = collector.finish(current)
    report = check(recorder.ops, max_states=1_000_000, time_limit_s=20)
    return Run(recorder.ops, report, recorder.errors, nemesis.log, healed_ns, watched)


def assert_watch_saw_every_write(run: Run) -> None:
    """The watch kept open through the faults lost no event and repeated none: revisions never go back, no
    (revision, key) twice, every acknowledged write and successful cas appears as exactly one PUT, and every PUT is a
    value some client sent (no compaction runs here, so no event is a resync)."""
    assert run.watched, "the watch saw nothing"
    revisions = [rev for rev, _, _, _ in run.watched]
    assert revisions == sorted(revisions), "watch events went back in revision"
    changes = [(rev, key) for rev, _, key, _ in run.watched]
    assert len(changes) == len(set(changes)), "a watch event was delivered twice"
    puts = Counter(value.decode() for _, kind, _, value in run.watched if kind == "PUT")
    sent = {op.value for op in run.history if op.kind in ("write", "cas") and op.outcome is not Outcome.FAILED}
    acknowledged = [
        op.value
        for op in run.history
        if op.outcome is Outcome.OK and (op.kind == "write" or (op.kind == "cas" and op.succeeded))
    ]
    missing = [value for value in acknowledged if puts[str(value)] != 1]
    assert not missing, f"acknowledged writes not seen exactly once by the watch: {missing[:5]}"
    unknown = [value for value in puts if value not in sent]
    assert not unknown, f"the watch saw values no client wrote: {unknown[:5]}"


def _summary(run: Run) -> str:
    by = Counter((op.kind, op.outcome.value) for op in run.history)
    by_cas_failed = sum(1 for op in run.history if op.kind == "cas" and op.succeeded is False)
    lines = ["faults:", *(f"  {line}" for line in run.faults), "operations:"]
    lines += [f"  {kind:5} {outcome:13} {n}" for (kind, outcome), n in sorted(by.items())]
    lines.append(f"  cas   compare-failed {by_cas_failed}")
    lines.append("errors:")
    lines += [f"  {n:4} x {what}" for what, n in run.errors.most_common()]
    lines.append("check:")
    lines += [f"  {line}" for line in run.report.describe().splitlines()]
    return "\n".join(lines)


def _dump(run: Run, path: Path) -> None:
    rows = [
        {
            "client": op.client, "key": op.key, "kind": op.kind, "invoke_ns": op.invoke_ns,
            "complete_ns": op.complete_ns, "outcome": op.outcome.value, "value": op.value, "expected": op.expected,
            "succeeded": op.succeeded, "observed": op.observed if isinstance(op.observed, str | None) else "?",
        }
        for op in run.history
    ]  # fmt: skip
    path.write_text(json.dumps(rows, indent=0))


def _corrupted(history: list[Op], key: str) -> list[Op] | None:
    """``key``'s history with its first final read changed to a value surely overwritten before that read began
    (written by a write that completed before another write began, which completed before the read began): a
    history the checker must reject. None when the key's history has no such pair of writes."""
    ops = [op for op in history if op.key == key]
    final = next((op for op in ops if op.client >= 1000 and op.kind == "read" and op.outcome is Outcome.OK), None)
    if final is None or final.complete_ns is None:
        return None
    writes = sorted((op for op in ops if op.kind == "write" and op.outcome is Outcome.OK), key=lambda op: op.invoke_ns)
    for old in writes:
        assert old.complete_ns is not None
        newer = [op for op in writes if old.complete_ns < op.invoke_ns and (op.complete_ns or 0) < final.invoke_ns]
        if newer and old.value != final.value:
            stale = Op.read(final.client, key, old.value, final.invoke_ns, final.complete_ns)
            return [stale if op is final else op for op in ops]
    return None


def assert_linearizable(run: Run, tmp_path: Path, min_ok: int) -> None:
    """Print the summary; on a violation, keep the history on disk and print each failing key's history, minimised;
    then assert every key decided LINEARIZABLE and at least ``min_ok`` operations succeeded."""
    print(_summary(run))
    if run.report.verdict is Verdict.NOT_LINEARIZABLE:
        dump = tmp_path / "history.json"
        _dump(run, dump)
        print(f"full history kept in {dump}")
        for key, result in run.report.results.items():
            if result.verdict is Verdict.NOT_LINEARIZABLE:
                ops = [op for op in run.history if op.key == key]
                small = minimise(ops, time_limit_s=30)
                print(f"key {key!r}: minimised failing history ({len(small)} of {len(ops)} ops):")
                print(format_history(small))
    assert run.report.verdict is not Verdict.UNKNOWN, (
        "the checker could not decide (the workload is too large for its bounds):\n" + run.report.describe()
    )
    assert run.report.ok, "history is not linearizable:\n" + run.report.describe()
    # The check can fail on this very history: a stale final read planted in it is rejected, on every key.
    for key in KEYS:
        corrupted = _corrupted(run.history, key)
        assert corrupted is not None, f"key {key!r}: no two sequential writes before the final reads"
        assert check_key(corrupted).verdict is Verdict.NOT_LINEARIZABLE, f"key {key!r}: a stale read went unnoticed"
    ok = [op for op in run.history if op.outcome is Outcome.OK and op.client < 1000]
    kinds = Counter(op.kind for op in ok)
    assert len(ok) >= min_ok, f"only {len(ok)} operations succeeded: the run tested too little"
    assert min(kinds[k] for k in ("write", "read", "cas")) >= min_ok // 10, f"too few of some kind: {kinds}"
    assert any(op.kind == "cas" and op.succeeded for op in ok), "no cas ever succeeded"
    assert_watch_saw_every_write(run)
    # The clients were still working once every fault had healed (so they also ran through every fault).
    after = Counter(op.kind for op in ok if op.invoke_ns >= run.healed_ns)
    assert after["write"] and after["read"], f"no write or no read after the last fault healed: {after}"


@pytest.fixture
def coord_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster("coord", tmp_path / "cluster", 3, heartbeat_ms=50, election_ms=500, peer_proxies=True) as c:
        yield c


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_etcd()
    with Cluster("etcd", tmp_path / "cluster", 3, heartbeat_ms=50, election_ms=500, peer_proxies=True) as c:
        yield c


# ops_per_client is a safety cap, well above what the clients do before the nemesis and the quiet time end.
SHORT = Plan(clients=6, ops_per_client=5000, faults=("kill", "partition"))
LONG = Plan(
    clients=8,
    ops_per_client=4000,
    think_s=0.03,
    faults=(
        "kill",
        "partition",
        "delay",
        "partition-follower",
        "kill-follower",
        "partition",
        "kill",
        "delay",
        "partition-follower",
        "cut",
        "crash-all",
        "partition",
        "kill",
    ),
    fault_s=3.0,
    quiet_s=3.0,
)


def test_coord_kv_is_linearizable_across_leader_kill_and_partition(coord_cluster: Cluster, tmp_path: Path) -> None:
    run = run_workload(coord_cluster, SHORT, seed=1)
    assert_linearizable(run, tmp_path, min_ok=150)


@pytest.mark.slow
def test_coord_kv_is_linearizable_under_a_long_nemesis(coord_cluster: Cluster, tmp_path: Path) -> None:
    run = run_workload(coord_cluster, LONG, seed=2)
    assert_linearizable(run, tmp_path, min_ok=600)


@pytest.mark.slow
def test_harness_self_check_etcd_is_linearizable(etcd_cluster: Cluster, tmp_path: Path) -> None:
    """The harness against real etcd: if this fails, the harness (not coord) is wrong."""
    run = run_workload(etcd_cluster, SHORT, seed=3)
    assert_linearizable(run, tmp_path, min_ok=150)
