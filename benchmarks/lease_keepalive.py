"""Lease keep-alives, coord vs etcd: keep-alives/s and their latency with many leases on keep-alive streams, on
3-member clusters started side by side.

    python -m benchmarks.lease_keepalive --leases 1000 --streams 20 --seconds 10
    python -m benchmarks.lease_keepalive --leases 100 --streams 4 --seconds 2 --targets etcd     # quick check

``--leases`` leases (TTL 60 s) are granted, then split over ``--streams`` LeaseKeepAlive streams (each on its own
channel; streams round-robin over the members, so most keep-alives reach a follower and are forwarded to the leader,
as in a real deployment) in ``--procs`` worker processes. Each stream keeps ``--window`` keep-alives in flight, cycling
through its leases, for ``--seconds``. A reply with TTL <= 0 (lease unknown) counts as an error. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import queue
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

LEASE_TTL = 60


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    endpoints: list[str]
    streams: list[int]
    leases: list[list[int]]  # per stream
    window: int
    seconds: float


def _worker(spec: WorkerSpec, ready: Any, go: Any, out: Any) -> None:
    try:
        result = asyncio.run(_keep_alive(spec, ready, go))
    except Exception as exc:  # reported to the parent, which fails the row
        result = {"index": spec.index, "failure": f"{type(exc).__name__}: {exc}"}
    out.put(result)


async def _keep_alive(spec: WorkerSpec, ready: Any, go: Any) -> dict[str, Any]:
    samples = array("q")
    errors = 0
    channels = [
        grpc.aio.insecure_channel(spec.endpoints[s % len(spec.endpoints)], options=STREAM_CHANNEL_OPTIONS)
        for s in spec.streams
    ]
    calls = [rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive() for ch in channels]
    for call, leases in zip(calls, spec.leases, strict=True):  # one round trip each: the streams are up
        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=leases[0]))
        await call.read()
    ready.put(spec.index)
    while not go.is_set():
        await asyncio.sleep(0.01)
    cpu0 = time.process_time()
    start = time.monotonic()
    stop_at = start + spec.seconds

    async def run(call: Any, leases: list[int]) -> None:
        nonlocal errors
        sent: list[int] = []  # send times of the requests in flight, in order (replies come in order)
        n = 0
        for _ in range(min(spec.window, len(leases))):
            sent.append(time.monotonic_ns())
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=leases[n % len(leases)]))
            n += 1
        while sent:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                errors += len(sent)
                return
            t0 = sent.pop(0)
            if resp.TTL > 0:
                samples.append(time.monotonic_ns() - t0)
            else:
                errors += 1
            if time.monotonic() < stop_at:
                sent.append(time.monotonic_ns())
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=leases[n % len(leases)]))
                n += 1

    await asyncio.gather(*(run(call, leases) for call, leases in zip(calls, spec.leases, strict=True)))
    end = time.monotonic()
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close(None)
    return {
        "index": spec.index,
        "samples": samples.tobytes(),
        "errors": errors,
        "start": start,
        "end": end,
        "cpu": time.process_time() - cpu0,
    }


@dataclass
class Row:
    target: str
    leases: int
    ok: int
    errors: int
    latencies_ns: list[int]
    elapsed: float
    client_cpu: float
    server_cpu: float | None
    other: float | None

    @property
    def per_s(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else float("nan")

    def ms(self, p: float) -> float:
        return percentile(self.latencies_ns, p) / 1e6


def _grant(endpoint: str, count: int) -> list[int]:
    async def grant_all() -> list[int]:
        async with grpc.aio.insecure_channel(endpoint, options=STREAM_CHANNEL_OPTIONS) as channel:
            stub = rpc_pb2_grpc.LeaseStub(channel)
            ids: list[int] = []
            for first in range(0, count, 50):
                batch = await asyncio.gather(
                    *(
                        stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=LEASE_TTL), timeout=30)
                        for _ in range(first, min(count, first + 50))
                    )
                )
                ids += [resp.ID for resp in batch]
            return ids

    return asyncio.run(grant_all())


def _revoke(endpoint: str, ids: list[int]) -> None:
    async def revoke_all() -> None:
        async with grpc.aio.insecure_channel(endpoint, options=STREAM_CHANNEL_OPTIONS) as channel:
            stub = rpc_pb2_grpc.LeaseStub(channel)
            for first in range(0, len(ids), 50):
                await asyncio.gather(
                    *(stub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=i), timeout=30) for i in ids[first : first + 50]),
                    return_exceptions=True,
                )

    asyncio.run(revoke_all())


def measure(target: Target, args: argparse.Namespace) -> Row:
    ids = _grant(target.leader.endpoint, args.leases)
    per_stream = split_evenly(len(ids), args.streams)
    stream_leases: list[list[int]] = []
    first = 0
    for n in per_stream:
        stream_leases.append(ids[first : first + n])
        first += n
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    workers = []
    first = 0
    for index, count in enumerate(split_evenly(args.streams, args.procs)):
        streams = list(range(first, first + count))
        first += count
        spec = WorkerSpec(
            index, target.endpoints, streams, [stream_leases[s] for s in streams], args.window, args.seconds
        )
        proc = ctx.Process(target=_worker, args=(spec, ready, go, out), daemon=True)
        proc.start()
        workers.append(proc)
    results: list[dict[str, Any]] = []
    try:
        for _ in workers:
            try:
                ready.get(timeout=60)
            except queue.Empty:
                raise RuntimeError(f"{target.name}: keep-alive streams were not up in time") from None
        cpu0, host0 = target.cpu_seconds(), host_ticks()
        go.set()
        for _ in workers:
            results.append(out.get(timeout=args.seconds + 60))
        cpu1, host1 = target.cpu_seconds(), host_ticks()
    finally:
        for proc in workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    _revoke(target.leader.endpoint, ids)
    failures = [r["failure"] for r in results if "failure" in r]
    if failures:
        raise RuntimeError(f"{target.name}: a keep-alive process failed: {failures[0]}")
    latencies: list[int] = []
    for r in results:
        samples = array("q")
        samples.frombytes(r["samples"])
        latencies.extend(samples)
    latencies.sort()
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    client_cpu = sum(r["cpu"] for r in results)
    server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    known = (client_cpu + (server_cpu or 0.0)) / elapsed if elapsed > 0 else 0.0
    return Row(
        target=target.name,
        leases=len(ids),
        ok=len(latencies),
        errors=sum(r["errors"] for r in results),
        latencies_ns=latencies,
        elapsed=elapsed,
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        other=other_cpu(host0, host1, known),
    )


def render(args: argparse.Namespace, rows: list[Row]) -> str:
    lines = [
        f"lease keep-alives: {args.leases} leases (TTL {LEASE_TTL}s) on {args.streams} streams over {args.procs} "
        f"processes, {args.window} in flight per stream, {args.members}-member clusters, {args.seconds:g}s per row; "
        f"host {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
        "",
    ]
    header = (
        f"{'target':<6} {'round':>5} {'keep-alives':>11} {'errors':>6} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'client cpu':>10} {'srv cpu':>7} {'other':>5}"
    )
    lines += [header, "-" * len(header)]
    for index, row in enumerate(rows):
        ccpu = f"{100 * row.client_cpu / row.elapsed:.0f}%" if row.elapsed > 0 else "-"
        scpu = f"{100 * row.server_cpu / row.elapsed:.0f}%" if row.server_cpu is not None and row.elapsed > 0 else "-"
        other = f"{100 * row.other:.0f}%" if row.other is not None else "-"
        lines.append(
            f"{row.target:<6} {index // len(args.targets) + 1:>5} {row.ok:>11} {row.errors:>6} {row.per_s:>8.0f} "
            f"{fmt(row.ms(50)):>8} {fmt(row.ms(99)):>8} {fmt(row.ms(100)):>8} {ccpu:>10} {scpu:>7} {other:>5}"
        )
    lines += [
        "",
        "per s: successful keep-alives / measured interval. Latency: request written -> reply read, per stream.",
        "client cpu: the keep-alive processes (100% = one core). srv cpu: all members. other: every other process.",
    ]
    coord = [r for r in rows if r.target == "coord"]
    etcd = [r for r in rows if r.target == "etcd"]
    if coord and etcd:
        lines += [
            "",
            f"coord/etcd ratio{' (medians)' if args.repeat > 1 else ''}: keep-alives/s "
            f"{fmt(ratio([r.per_s for r in coord], [r.per_s for r in etcd]))}x, "
            f"p50 {fmt(ratio([r.ms(50) for r in coord], [r.ms(50) for r in etcd]))}x, "
            f"p99 {fmt(ratio([r.ms(99) for r in coord], [r.ms(99) for r in etcd]))}x of etcd's latency",
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lease_keepalive", description=__doc__.split("\n\n")[0])
    p.add_argument("--leases", type=int, default=1000, help="leases kept alive (default 1000)")
    p.add_argument("--streams", type=int, default=20, help="LeaseKeepAlive streams (default 20)")
    p.add_argument("--procs", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--window", type=int, default=4, help="keep-alives in flight per stream (default 4)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per row (default 10)")
    p.add_argument("--repeat", type=int, default=1, help="rows per target, alternating (ratio of medians)")
    p.add_argument("--members", type=int, default=3, help="cluster size (default 3)")
    p.add_argument("--targets", type=target_list, default=list(TARGETS), help="coord,etcd (default both)")
    p.add_argument("--keep-data", action="store_true", help="keep the clusters' directories")
    args = p.parse_args(argv)
    if min(args.leases, args.streams, args.procs, args.window, args.repeat) < 1 or args.seconds <= 0:
        p.error("--leases, --streams, --procs, --window, --repeat must be >= 1 and --seconds > 0")
    args.streams = min(args.streams, args.leases)
    args.procs = min(args.procs, args.streams)
    require_installed(p, args.targets)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def measure_all(rows: list[Row]) -> None:
        with clusters(args.targets, args.members, args.keep_data) as targets:
            for round_ in range(args.repeat):
                order = args.targets if round_ % 2 == 0 else args.targets[::-1]
                for name in order:
                    print(f"# round {round_ + 1}: {name} ...", file=sys.stderr, flush=True)
                    rows.append(measure(targets[name], args))

    return run_main(measure_all, lambda rows: render(args, rows))


if __name__ == "__main__":
    sys.exit(main())
