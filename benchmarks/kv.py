"""A closed-loop etcd v3 KV load generator on grpc.aio, spread over worker processes.

One measured run drives ``clients`` concurrent request loops against one endpoint. The loops are split as evenly as
possible over ``procs`` worker processes (started with the ``spawn`` method, so no gRPC state is forked); inside a
worker they share ``ceil(clients_in_worker / clients_per_channel)`` gRPC channels, each on its own TCP connection.
Each loop sends one request, awaits the answer, records its latency and sends the next (closed loop, no think time).

Every phase is bounded twice: by time (``seconds``) and by a request budget (``max_requests``, split over the
workers in proportion to their loops). Failed requests count against the budget, so a dead server cannot make a
loop spin forever. Each worker warms up (its own connections, same op and concurrency, results thrown away), then
waits for the parent's start signal so that all workers measure the same interval.

Workers send back every latency sample of a successful request, not summaries, so the parent's percentiles are
exact over the whole run. The same code drives every target, so comparisons between servers are like for like.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import queue
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from coord._proto.etcdserverpb.rpc_pb2_grpc import KVAsyncStub  # exists in the stubs only

__all__ = ["OPS", "LoadResult", "LoadSpec", "WorkerResult", "percentile", "run_load", "split_evenly"]

OPS = ("put", "range", "txn")

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Without a local pool, channels with equal arguments share one subchannel (one TCP connection).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]


@dataclass(frozen=True)
class LoadSpec:
    """What one measured run does. ``key_prefix`` must be unique per run (keys are ``<prefix>/p<worker>/<n>``)."""

    endpoint: str
    op: str
    clients: int
    seconds: float
    max_requests: int
    value_size: int
    key_prefix: str
    warmup_seconds: float = 1.0
    warmup_requests: int = 20_000
    procs: int = 1
    clients_per_channel: int = 16
    rpc_timeout: float = 10.0
    connect_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, not {self.op!r}")
        if self.clients < 1 or self.procs < 1 or self.clients_per_channel < 1:
            raise ValueError("clients, procs and clients_per_channel must be >= 1")
        if self.seconds <= 0 or self.max_requests < 1:
            raise ValueError("seconds must be > 0 and max_requests >= 1")

    @property
    def worker_count(self) -> int:
        return min(self.procs, self.clients)

    @property
    def channel_count(self) -> int:
        return sum(math.ceil(n / self.clients_per_channel) for n in split_evenly(self.clients, self.worker_count))


@dataclass
class WorkerResult:
    """What one worker process measured. Times are ``time.monotonic()`` (system-wide, comparable across processes)."""

    index: int
    ok: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    start: float = 0.0
    end: float = 0.0
    cpu_seconds: float = 0.0
    stopped_by: str = "time"
    failure: str | None = None


@dataclass
class LoadResult:
    """A whole measured run: every worker's samples merged."""

    spec: LoadSpec
    ok: int
    errors: int
    first_error: str | None
    latencies_ns: list[int]  # sorted, successful requests only
    elapsed: float
    generator_cpu_seconds: float
    stopped_by: str

    @property
    def requests(self) -> int:
        return self.ok + self.errors

    @property
    def throughput(self) -> float:
        """Successful requests per second over the measured interval (first worker start to last worker end)."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def latency_ms(self, p: float) -> float:
        return percentile(self.latencies_ns, p) / 1e6

    @property
    def max_ms(self) -> float:
        return self.latencies_ns[-1] / 1e6 if self.latencies_ns else math.nan


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers that differ by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def percentile(sorted_values: list[int], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of already sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


# --------------------------------------------------------------------------------------------------- worker side


Call = Callable[["KVAsyncStub", bytes], Awaitable[None]]


def _make_call(spec: LoadSpec, fixed_key: bytes, value: bytes) -> Call:
    timeout = spec.rpc_timeout
    if spec.op == "put":

        async def put(stub: KVAsyncStub, key: bytes) -> None:
            await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=timeout)

        return put

    if spec.op == "range":
        request = rpc_pb2.RangeRequest(key=fixed_key)  # serializable=False: a linearizable read

        async def get(stub: KVAsyncStub, key: bytes) -> None:
            response = await stub.Range(request, timeout=timeout)
            if len(response.kvs) != 1:
                raise _BadAnswer(f"range of {fixed_key!r} returned {len(response.kvs)} keys, expected 1")

        return get

    # txn: if version(fixed_key) > 0 then put(unique key) else range(fixed_key); the compare always holds.
    compare = rpc_pb2.Compare(
        key=fixed_key, target=rpc_pb2.Compare.CompareTarget.VERSION, result=rpc_pb2.Compare.CompareResult.GREATER
    )
    failure = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=fixed_key))

    async def txn(stub: KVAsyncStub, key: bytes) -> None:
        success = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))
        response = await stub.Txn(
            rpc_pb2.TxnRequest(compare=[compare], success=[success], failure=[failure]), timeout=timeout
        )
        if not response.succeeded:
            raise _BadAnswer("txn compare version(key) > 0 failed on an existing key")

    return txn


class _BadAnswer(Exception):
    """A reply that arrived but is wrong; counted as an error."""


class _Phase:
    """Shared state of the loops of one worker in one phase (asyncio is single-threaded: plain ints are safe)."""

    def __init__(self, prefix: bytes, budget: int, seconds: float, record: bool) -> None:
        self.prefix = prefix
        self.budget = budget
        self.seconds = seconds
        self.record = record
        self.deadline = 0.0
        self.issued = 0
        self.ok = 0
        self.errors = 0
        self.first_error: str | None = None
        self.latencies_ns: array[int] = array("q")
        self.start = 0.0
        self.end = 0.0

    async def run(self, stubs: list[KVAsyncStub], loops: int, call: Call) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + self.seconds
        await asyncio.gather(*(self._loop(stubs[i % len(stubs)], call) for i in range(loops)))
        self.end = time.monotonic()

    async def _loop(self, stub: KVAsyncStub, call: Call) -> None:
        perf = time.perf_counter_ns
        clock = time.monotonic
        while self.issued < self.budget and clock() < self.deadline:
            n = self.issued
            self.issued += 1
            key = self.prefix + str(n).encode()
            t0 = perf()
            try:
                await call(stub, key)
            except (TimeoutError, grpc.aio.AioRpcError, _BadAnswer) as exc:
                self.errors += 1
                if self.first_error is None:
                    self.first_error = _describe(exc)
                continue
            elapsed = perf() - t0
            self.ok += 1
            if self.record:
                self.latencies_ns.append(elapsed)

    @property
    def stopped_by(self) -> str:
        return "count" if self.issued >= self.budget else "time"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def _drive(
    spec: LoadSpec, index: int, loops: int, budget: int, ready: Any, go: EventType, go_timeout: float
) -> WorkerResult:
    result = WorkerResult(index)
    channel_count = math.ceil(loops / spec.clients_per_channel)
    channels = [grpc.aio.insecure_channel(spec.endpoint, options=_CHANNEL_OPTIONS) for _ in range(channel_count)]
    try:
        for channel in channels:
            try:
                await asyncio.wait_for(channel.channel_ready(), spec.connect_timeout)
            except TimeoutError:
                raise TimeoutError(f"cannot connect to {spec.endpoint} within {spec.connect_timeout:g}s") from None
        stubs = [rpc_pb2_grpc.KVStub(channel) for channel in channels]
        value = os.urandom(spec.value_size // 2 + 1).hex().encode()[: spec.value_size]
        fixed_key = f"{spec.key_prefix}/fixed".encode()
        if spec.op in ("range", "txn"):
            # Every worker writes the same key and value: idempotent, and it exists before anyone reads it.
            await stubs[0].Put(rpc_pb2.PutRequest(key=fixed_key, value=value), timeout=spec.rpc_timeout)
        call = _make_call(spec, fixed_key, value)

        if spec.warmup_seconds > 0 and spec.warmup_requests > 0:
            warm_prefix = f"{spec.key_prefix}/warmup/p{index}/".encode()
            warm_budget = max(loops, spec.warmup_requests // spec.worker_count)
            await _Phase(warm_prefix, warm_budget, spec.warmup_seconds, record=False).run(stubs, loops, call)

        ready.put(("ready", index, None))
        started = await asyncio.get_running_loop().run_in_executor(None, go.wait, go_timeout)
        if not started:
            raise TimeoutError(f"no start signal within {go_timeout:.0f}s")

        phase = _Phase(f"{spec.key_prefix}/p{index}/".encode(), budget, spec.seconds, record=True)
        cpu0 = time.process_time()
        await phase.run(stubs, loops, call)
        result.cpu_seconds = time.process_time() - cpu0
        result.ok, result.errors, result.first_error = phase.ok, phase.errors, phase.first_error
        result.latencies_ns = phase.latencies_ns
        result.start, result.end, result.stopped_by = phase.start, phase.end, phase.stopped_by
        return result
    finally:
        for channel in channels:
            await channel.close(None)


def _worker_main(
    spec: LoadSpec, index: int, loops: int, budget: int, ready: Any, results: Any, go: EventType, go_timeout: float
) -> None:
    try:
        result = asyncio.run(_drive(spec, index, loops, budget, ready, go, go_timeout))
    except BaseException as exc:  # report anything, then exit: the parent turns it into an error
        ready.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        results.put(WorkerResult(index, failure=f"{type(exc).__name__}: {exc}"))
        return
    results.put(result)


# --------------------------------------------------------------------------------------------------- parent side


class LoadError(RuntimeError):
    """A worker could not connect, warm up or report back."""


def run_load(spec: LoadSpec, on_start: Callable[[], None] | None = None) -> LoadResult:
    """Run one measured phase with ``spec.worker_count`` worker processes and merge their samples.

    ``on_start`` is called right before the start signal (e.g. to sample the server's CPU time). Every worker process
    is joined, or terminated by PID after a bounded wait, before this returns or raises.
    """
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    results = ctx.Queue()
    go = ctx.Event()
    loops_per_worker = split_evenly(spec.clients, spec.worker_count)
    budgets = [max(loops, spec.max_requests * loops // spec.clients) for loops in loops_per_worker]
    # Time for spawning, connecting and warming up; then for the measured phase and the slowest last requests.
    ready_timeout = 60.0 + spec.connect_timeout + spec.warmup_seconds + spec.rpc_timeout
    result_timeout = 60.0 + spec.seconds + spec.rpc_timeout
    workers = [
        ctx.Process(
            target=_worker_main,
            args=(spec, i, loops, budgets[i], ready, results, go, ready_timeout),
            name=f"bench-worker-{i}",
            daemon=True,
        )
        for i, loops in enumerate(loops_per_worker)
    ]
    collected: list[WorkerResult] = []
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + ready_timeout
        for _ in workers:
            try:
                status, index, detail = ready.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise LoadError(f"workers not ready after {ready_timeout:.0f}s") from None
            if status != "ready":
                raise LoadError(f"worker {index} failed before the measured phase: {detail}")
        if on_start is not None:
            on_start()
        go.set()
        deadline = time.monotonic() + result_timeout
        for _ in workers:
            try:
                collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise LoadError(f"workers did not report within {result_timeout:.0f}s") from None
    finally:
        go.set()  # release any worker still waiting, so it can exit on its own
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive() and worker.pid is not None:
                worker.terminate()  # SIGTERM to this worker's PID
                worker.join(timeout=5)
                if worker.is_alive():
                    worker.kill()
                    worker.join(timeout=5)
        for q in (ready, results):
            with contextlib.suppress(Exception):
                q.close()
                q.join_thread()

    failures = [r.failure for r in collected if r.failure]
    if failures:
        raise LoadError("; ".join(failures))
    samples: list[int] = []
    for r in collected:
        samples.extend(r.latencies_ns)
    samples.sort()
    first_errors = [r.first_error for r in sorted(collected, key=lambda r: r.index) if r.first_error]
    return LoadResult(
        spec=spec,
        ok=sum(r.ok for r in collected),
        errors=sum(r.errors for r in collected),
        first_error=first_errors[0] if first_errors else None,
        latencies_ns=samples,
        elapsed=max(r.end for r in collected) - min(r.start for r in collected),
        generator_cpu_seconds=sum(r.cpu_seconds for r in collected),
        stopped_by="count" if any(r.stopped_by == "count" for r in collected) else "time",
    )
