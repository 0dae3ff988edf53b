"""Watch delivery, coord vs etcd: put-to-event latency p50/p99 and events/s delivered to many watchers, on 3-member
clusters started side by side.

    python -m benchmarks.watch --watchers 1000 --seconds 10 --rates 20,100
    python -m benchmarks.watch --watchers 100 --seconds 2 --rates 10 --targets etcd     # quick check

Every watcher watches the same prefix, so each put is one event for every watcher (full fan-out, as when many
clients watch one directory). Watchers are spread over ``--streams`` gRPC Watch streams (each on its own channel,
streams round-robin over the members, as clients of a real deployment are), the streams over ``--procs`` worker
processes. A writer puts at ``--rates`` puts/s (open loop; each value carries its send time) to the leader; each
event's latency is its arrival time minus that send time (``time.monotonic_ns``, system-wide on Linux). See
benchmarks/README.md for the caveats.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import platform
import queue
import secrets
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from benchmarks.common import (
    STREAM_CHANNEL_OPTIONS,
    TARGETS,
    Target,
    clusters,
    fmt,
    host_ticks,
    other_cpu,
    ratio,
    require_installed,
    run_main,
    target_list,
)
from benchmarks.kv import percentile, split_evenly
from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc

# ---------------------------------------------------------------------------------------------------- watchers


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    endpoints: list[str]
    prefix: bytes
    streams: list[int]  # global stream numbers this worker opens
    watchers_per_stream: list[int]
    timeout: float


def _worker(spec: WorkerSpec, ready: Any, go: Any, expected: Any, out: Any) -> None:
    try:
        result = asyncio.run(_watch(spec, ready, go, expected))
    except Exception as exc:  # reported to the parent, which fails the row
        result = {"index": spec.index, "failure": f"{type(exc).__name__}: {exc}"}
    out.put(result)


async def _watch(spec: WorkerSpec, ready: Any, go: Any, expected: Any) -> dict[str, Any]:
    end = spec.prefix[:-1] + bytes([spec.prefix[-1] + 1])
    samples = array("q")
    first_event = last_event = 0.0
    channels = []
    calls = []
    for stream, n in zip(spec.streams, spec.watchers_per_stream, strict=True):
        channel = grpc.aio.insecure_channel(
            spec.endpoints[stream % len(spec.endpoints)], options=STREAM_CHANNEL_OPTIONS
        )
        channels.append(channel)
        call = rpc_pb2_grpc.WatchStub(channel).Watch()
        for _ in range(n):
            await call.write(
                rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=spec.prefix, range_end=end))
            )
        created = 0
        while created < n:
            resp = await asyncio.wait_for(call.read(), spec.timeout)
            if resp is grpc.aio.EOF:
                raise RuntimeError("watch stream ended while creating watchers")
            created += int(resp.created)
        calls.append((call, n))
    ready.put(spec.index)
    while not go.is_set():
        await asyncio.sleep(0.01)
    cpu0 = time.process_time()
    total = sum(spec.watchers_per_stream)
    seen = [0] * len(calls)

    async def read(slot: int, call: Any) -> None:
        nonlocal first_event, last_event
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            now = time.monotonic_ns()
            for event in resp.events:
                samples.append(now - int.from_bytes(event.kv.value[:8], "big"))
            seen[slot] += len(resp.events)
            if resp.events:
                last_event = now / 1e9
                first_event = first_event or last_event

    tasks = [asyncio.create_task(read(slot, call)) for slot, (call, _) in enumerate(calls)]
    # The parent sets ``expected`` (puts per watcher) once the writer finished; stop once every watcher has them
    # all, or at the deadline.
    while expected.value < 0:
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + spec.timeout
    wanted = [expected.value * n for _, n in calls]
    while any(s < w for s, w in zip(seen, wanted, strict=True)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    incomplete = sum(1 for s, w in zip(seen, wanted, strict=True) if s < w)
    for task in tasks:
        task.cancel()
    for call, _ in calls:
        call.cancel()
    for channel in channels:
        await channel.close(None)
    return {
        "index": spec.index,
        "samples": samples.tobytes(),
        "events": len(samples),
        "watchers": total,
        "first": first_event,
        "last": last_event,
        "cpu": time.process_time() - cpu0,
        "incomplete": incomplete,
    }


@dataclass
class Row:
    target: str
    rate: float
    puts: int
    watchers: int
    expected_events: int
    events: int
    latencies_ns: list[int]
    elapsed: float
    watcher_cpu: float
    server_cpu: float | None
    other: float | None
    put_errors: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else math.nan

    def ms(self, p: float) -> float:
        return percentile(self.latencies_ns, p) / 1e6


async def _write(endpoint: str, prefix: bytes, rate: float, seconds: float, max_puts: int) -> tuple[int, int]:
    """Put ``rate`` keys per second (open loop) for ``seconds``; returns (puts acknowledged, errors)."""
    async with grpc.aio.insecure_channel(endpoint, options=STREAM_CHANNEL_OPTIONS) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        ok = errors = 0
        pending: set[asyncio.Task[None]] = set()

        async def put(n: int) -> None:
            nonlocal ok, errors
            value = time.monotonic_ns().to_bytes(8, "big") + b"x" * 56
            try:
                await kv.Put(rpc_pb2.PutRequest(key=prefix + b"%08d" % n, value=value), timeout=10)
                ok += 1
            except grpc.aio.AioRpcError:
                errors += 1

        start = time.monotonic()
        n = 0
        while n < max_puts and time.monotonic() - start < seconds:
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(put(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        if pending:
            await asyncio.wait(pending, timeout=15)
        return ok, errors


def measure(target: Target, args: argparse.Namespace, rate: float, run_id: str) -> Row:
    prefix = f"bench/{run_id}/{target.name}/r{rate:g}/".encode()
    per_proc = split_evenly(args.streams, args.procs)
    per_stream = split_evenly(args.watchers, args.streams)
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    expected = ctx.Value("q", -1)
    workers = []
    first = 0
    for index, count in enumerate(per_proc):
        streams = list(range(first, first + count))
        first += count
        spec = WorkerSpec(index, target.endpoints, prefix, streams, [per_stream[s] for s in streams], args.timeout)
        proc = ctx.Process(target=_worker, args=(spec, ready, go, expected, out), daemon=True)
        proc.start()
        workers.append(proc)
    results: list[dict[str, Any]] = []
    try:
        for _ in workers:
            try:
                ready.get(timeout=args.timeout + 30)
            except queue.Empty:
                raise RuntimeError(f"{target.name}: watchers were not created in time") from None
        cpu0, host0 = target.cpu_seconds(), host_ticks()
        go.set()
        puts, errors = asyncio.run(_write(target.leader.endpoint, prefix, rate, args.seconds, args.max_puts))
        expected.value = puts
        for _ in workers:
            results.append(out.get(timeout=args.timeout + 30))
        cpu1, host1 = target.cpu_seconds(), host_ticks()
    finally:
        for proc in workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    failures = [r["failure"] for r in results if "failure" in r]
    if failures:
        raise RuntimeError(f"{target.name}: a watcher process failed: {failures[0]}")
    latencies: list[int] = []
    for r in results:
        samples = array("q")
        samples.frombytes(r["samples"])
        latencies.extend(samples)
    latencies.sort()
    firsts = [r["first"] for r in results if r["first"]]
    lasts = [r["last"] for r in results if r["last"]]
    elapsed = max(lasts) - min(firsts) if firsts and lasts else 0.0
    watcher_cpu = sum(r["cpu"] for r in results)
    server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    known = (watcher_cpu + (server_cpu or 0.0)) / elapsed if elapsed > 0 else 0.0
    return Row(
        target=target.name,
        rate=rate,
        puts=puts,
        watchers=args.watchers,
        expected_events=puts * args.watchers,
        events=len(latencies),
        latencies_ns=latencies,
        elapsed=elapsed,
        watcher_cpu=watcher_cpu,
        server_cpu=server_cpu,
        other=other_cpu(host0, host1, known),
        put_errors=errors,
    )


def render(args: argparse.Namespace, rows: list[Row]) -> str:
    cores = os.cpu_count()
    lines = [
        f"watch fan-out: {args.watchers} watchers on one prefix, {args.streams} streams over {args.procs} processes, "
        f"{args.members}-member clusters; {args.seconds:g}s of puts per row; host {platform.machine()} {cores} cores, "
        f"python {platform.python_version()}",
        "",
    ]
    header = (
        f"{'target':<6} {'puts/s':>6} {'puts':>6} {'events':>9} {'missing':>7} {'events/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'watch cpu':>9} {'srv cpu':>7} {'other':>5}"
    )
    lines += [header, "-" * len(header)]
    for row in sorted(rows, key=lambda r: (r.rate, TARGETS.index(r.target))):
        wcpu = f"{100 * row.watcher_cpu / row.elapsed:.0f}%" if row.elapsed > 0 else "-"
        scpu = f"{100 * row.server_cpu / row.elapsed:.0f}%" if row.server_cpu is not None and row.elapsed > 0 else "-"
        other = f"{100 * row.other:.0f}%" if row.other is not None else "-"
        lines.append(
            f"{row.target:<6} {row.rate:>6g} {row.puts:>6} {row.events:>9} {row.expected_events - row.events:>7} "
            f"{row.events_per_s:>9.0f} {fmt(row.ms(50)):>8} {fmt(row.ms(99)):>8} {fmt(row.ms(100)):>8} "
            f"{wcpu:>9} {scpu:>7} {other:>5}"
        )
    lines += [
        "",
        "events/s: events received by all watchers / (last event - first event). Latency: put sent -> event received",
        "by a watcher process. watch cpu: the watcher processes while measuring (100% = one core). srv cpu: all",
        "members of the cluster. other: every other process on the host. missing: events not received in --timeout.",
    ]
    ratios = []
    for rate in args.rates:
        coord = [r for r in rows if r.target == "coord" and r.rate == rate]
        etcd = [r for r in rows if r.target == "etcd" and r.rate == rate]
        if coord and etcd:
            ratios.append(
                f"  {rate:g} puts/s: events/s coord/etcd = "
                f"{fmt(ratio([r.events_per_s for r in coord], [r.events_per_s for r in etcd]))}x, "
                f"p50 {fmt(ratio([r.ms(50) for r in coord], [r.ms(50) for r in etcd]))}x, "
                f"p99 {fmt(ratio([r.ms(99) for r in coord], [r.ms(99) for r in etcd]))}x of etcd's latency"
            )
    if ratios:
        lines += ["", "coord/etcd ratio:", *ratios]
    for row in rows:
        if row.put_errors:
            lines.append(f"! {row.target} at {row.rate:g} puts/s: {row.put_errors} puts failed")
    return "\n".join(lines)


def _float_list(text: str) -> list[float]:
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("expected one or more numbers > 0")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.watch", description=__doc__.split("\n\n")[0])
    p.add_argument("--watchers", type=int, default=1000, help="watchers, all on one prefix (default 1000)")
    p.add_argument("--streams", type=int, default=20, help="gRPC Watch streams carrying them (default 20)")
    p.add_argument("--procs", type=int, default=2, help="watcher processes (default 2)")
    p.add_argument("--rates", type=_float_list, default=[20.0, 100.0], help="puts/s per row (default 20,100)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of puts per row (default 10)")
    p.add_argument("--max-puts", type=int, default=100_000, help="put budget per row")
    p.add_argument("--members", type=int, default=3, help="cluster size (default 3)")
    p.add_argument("--targets", type=target_list, default=list(TARGETS), help="coord,etcd (default both)")
    p.add_argument("--timeout", type=float, default=60.0, help="how long watchers may lag behind the last put")
    p.add_argument("--keep-data", action="store_true", help="keep the clusters' directories")
    args = p.parse_args(argv)
    if args.watchers < 1 or args.streams < 1 or args.procs < 1 or args.seconds <= 0 or args.max_puts < 1:
        p.error("--watchers, --streams, --procs, --max-puts must be >= 1 and --seconds > 0")
    args.streams = min(args.streams, args.watchers)
    args.procs = min(args.procs, args.streams)
    require_installed(p, args.targets)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = secrets.token_hex(4)

    def measure_all(rows: list[Row]) -> None:
        with clusters(args.targets, args.members, args.keep_data) as targets:
            for rate in args.rates:
                for name in args.targets:
                    print(f"# {name}: {rate:g} puts/s ...", file=sys.stderr, flush=True)
                    rows.append(measure(targets[name], args, rate, run_id))

    return run_main(measure_all, lambda rows: render(args, rows))


if __name__ == "__main__":
    sys.exit(main())
