"""Compare coord-server with real etcd: puts/s and p50/p99/max latency at several client counts, side by side.

    python -m benchmarks.kv_put --seconds 10 --clients 1,64 --value-size 256
    python -m benchmarks.kv_put --seconds 1 --clients 1,4 --targets etcd
    python -m benchmarks.kv_put --op range --endpoint-etcd 127.0.0.1:2379 --targets etcd

Without ``--endpoint-<target>`` each target gets a fresh single-member server (temporary data directory, free ports on
127.0.0.1), which is stopped by PID and deleted at the end. Both servers stay up; the targets take turns at each
concurrency level, and only one is under load at a time. See benchmarks/README.md for what is measured and the caveats.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import noop_server
from benchmarks.common import (
    TARGETS,
    cpu_seconds,
    fmt,
    host_ticks,
    ratio,
    require_installed,
    run_main,
    target_list,
)
from benchmarks.kv import OPS, LoadError, LoadResult, LoadSpec, run_load
from coord.testing import (
    Cluster,
    ServerProcess,
    free_port,
    start_coord_server,
    start_etcd,
)

# --baselines: reference rows that bound what coord could reach on this machine (see benchmarks/README.md).
SOLO = "coord-solo"  # a single-member coord-server: everything but replication (only with --members > 1)
NOOP = "noop"  # benchmarks.noop_server: grpc.aio and protobuf answering at once, the floor of a Python server
_DISTURBED = 0.5  # "other" CPU (in cores) above which a row is flagged as disturbed by other work on the machine


@dataclass
class Row:
    target: str
    round: int
    result: LoadResult
    server_cpu_seconds: float | None  # None when the server is not ours (given endpoint) or unreadable
    host_busy: float | None  # busy fraction of all cores of this machine over the run (0..1)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("expected one or more integers >= 1")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kv_put",
        description="Closed-loop etcd v3 KV load against coord-server and real etcd, with the same generator.",
    )
    parser.add_argument("--op", choices=OPS, default="put", help="put (default), range (linearizable get), txn")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row (default 10)")
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="request budget per row; a row stops at whichever comes first"
    )
    parser.add_argument("--clients", type=_int_list, default=[1, 64], help="concurrency levels, e.g. 1,64 (default)")
    parser.add_argument("--value-size", type=int, default=256, help="value bytes (default 256)")
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        help="start clusters of this many members (default 1); load goes to the leader",
    )
    parser.add_argument("--targets", type=target_list, default=list(TARGETS), help="coord,etcd (default both)")
    parser.add_argument("--endpoint-coord", metavar="HOST:PORT", help="use this running coord-server")
    parser.add_argument("--endpoint-etcd", metavar="HOST:PORT", help="use this running etcd")
    parser.add_argument(
        "--procs",
        type=int,
        default=0,
        help="generator worker processes per row (default 0 = auto: 1 below 16 clients, else 2)",
    )
    parser.add_argument("--clients-per-channel", type=int, default=16, help="loops sharing one gRPC channel")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="warm-up before each row (default 1)")
    parser.add_argument("--warmup-requests", type=int, default=20_000, help="warm-up request budget per row")
    parser.add_argument("--rpc-timeout", type=float, default=10.0, help="deadline of one request in seconds")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all rows, targets alternating (ratios use medians)"
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help=f"also measure {SOLO} (a single-member coord, with --members > 1) and {NOOP} (a grpc.aio server that "
        "does nothing), as ceilings for coord on this machine",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--keep-data", action="store_true", help="do not delete the servers' temporary directories")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.max_requests < 1 or args.value_size < 0 or args.procs < 0:
        parser.error("--seconds must be > 0, --max-requests >= 1, --value-size >= 0, --procs >= 0")
    if args.clients_per_channel < 1 or args.repeat < 1:
        parser.error("--clients-per-channel and --repeat must be >= 1")
    if "coord" in args.targets and not args.endpoint_coord and importlib.util.find_spec("coord.server.main") is None:
        parser.error("coord-server is not available (no module coord.server.main); use --targets etcd")
    require_installed(parser, args.targets, etcd_needed=not args.endpoint_etcd)
    args.all_targets = list(args.targets)
    if args.baselines:
        if args.members > 1:
            args.all_targets.append(SOLO)
        args.all_targets.append(NOOP)
    return args


def auto_procs(clients: int, requested: int) -> int:
    if requested > 0:
        return min(requested, clients)
    return 1 if clients < 16 else min(2, clients)


class _CpuSampler:
    """CPU used by the server process and by the whole machine between ``start`` and ``stop``."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._proc0: float | None = None
        self._host0: tuple[int, int] | None = None
        self.process_seconds: float | None = None
        self.host_busy: float | None = None

    def start(self) -> None:
        self._proc0 = cpu_seconds(self.pid) if self.pid else None
        self._host0 = host_ticks()

    def stop(self) -> None:
        proc1 = cpu_seconds(self.pid) if self.pid else None
        if proc1 is not None and self._proc0 is not None:
            self.process_seconds = proc1 - self._proc0
        host1 = host_ticks()
        if host1 is not None and self._host0 is not None and host1[1] > self._host0[1]:
            self.host_busy = (host1[0] - self._host0[0]) / (host1[1] - self._host0[1])


@contextlib.contextmanager
def _server(
    target: str, endpoint: str | None, keep_data: bool, members: int = 1
) -> Iterator[tuple[str, ServerProcess | None]]:
    """Yield (endpoint, our process or None). A server we start is stopped by PID and its directory removed. With
    ``members > 1`` a cluster of that size is started and the endpoint is its leader's (the CPU figures are the
    leader's)."""
    if endpoint:
        yield endpoint, None
        return
    if target == SOLO:
        with _server("coord", None, keep_data) as solo:
            yield solo
        return
    base = Path(tempfile.mkdtemp(prefix=f"bench-{target}-"))
    server: ServerProcess | None = None
    if members > 1:
        try:
            with Cluster(target, base, members, heartbeat_ms=100, election_ms=1000) as cluster:
                try:
                    lead = cluster.wait_leader(30.0)
                except TimeoutError:
                    raise LoadError("the cluster did not elect a leader") from None
                yield lead.endpoint, lead
        finally:
            if not keep_data:
                shutil.rmtree(base, ignore_errors=True)
        return
    try:
        if target == NOOP:
            server = noop_server.start(base)
        elif target == "coord":
            # coord-server's HTTP listener defaults to the fixed port 2381: give it a free one, so this run does not
            # collide with another coord-server on the machine (a test run, a second benchmark).
            http_url = f"http://127.0.0.1:{free_port()}"
            server = start_coord_server(base / target, extra_args=["--listen-client-http-urls", http_url])
        else:
            server = start_etcd(base / target)
        yield server.endpoint, server
    finally:
        if server is not None:
            died = not server.alive()
            server.stop()
            if died or server.proc.returncode not in (0, -15):
                tail = server.log()[-3000:]
                print(f"# {target} exited with {server.proc.returncode}; end of its log:\n{tail}", file=sys.stderr)
        if keep_data:
            print(f"# kept {target} data and log in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, rows: list[Row]) -> None:
    """Measure every (round, clients, target) row, appending to ``rows`` as they finish (kept if a later row fails).

    All servers are started first and stay up; the targets then take turns at each concurrency level (reversed order
    in odd rounds), so that a change in the machine's background load hits both rather than one of them.
    """
    run_id = secrets.token_hex(4)
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[str, ServerProcess | None]] = {}
        for target in args.all_targets:
            given = {"coord": args.endpoint_coord, "etcd": args.endpoint_etcd}.get(target)
            endpoint, server = stack.enter_context(
                _server(target, given, args.keep_data, args.members if target in TARGETS else 1)
            )
            servers[target] = (endpoint, server)
            origin = f"{'given' if given else 'started'} {endpoint}" + (f" pid {server.pid}" if server else "")
            print(f"# {target}: {origin}", file=sys.stderr, flush=True)
        for round_ in range(args.repeat):
            for clients in args.clients:
                order = args.all_targets if round_ % 2 == 0 else args.all_targets[::-1]
                for target in order:
                    endpoint, server = servers[target]
                    spec = LoadSpec(
                        endpoint=endpoint,
                        op=args.op,
                        clients=clients,
                        seconds=args.seconds,
                        max_requests=args.max_requests,
                        value_size=args.value_size,
                        key_prefix=f"bench/{run_id}/{target}/{args.op}/c{clients}/r{round_}",
                        warmup_seconds=args.warmup_seconds,
                        warmup_requests=args.warmup_requests,
                        procs=auto_procs(clients, args.procs),
                        clients_per_channel=args.clients_per_channel,
                        rpc_timeout=args.rpc_timeout,
                    )
                    print(
                        f"# round {round_ + 1}/{args.repeat}, {target}: {clients} clients, {spec.worker_count} procs, "
                        f"{spec.channel_count} channels ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    sampler = _CpuSampler(server.pid if server else None)
                    result = run_load(spec, on_start=sampler.start)
                    sampler.stop()
                    rows.append(Row(target, round_ + 1, result, sampler.process_seconds, sampler.host_busy))
                    if server is not None and not server.alive():
                        raise LoadError(f"{target} died during the run:\n{server.log()[-2000:]}")


def _server_us_per_request(row: Row) -> float:
    if row.server_cpu_seconds is None or row.result.ok == 0:
        return math.nan
    return 1e6 * row.server_cpu_seconds / row.result.ok


def _rates(rows: list[Row], target: str, clients: int) -> list[float]:
    return [row.result.throughput for row in rows if row.target == target and row.result.spec.clients == clients]


def render(args: argparse.Namespace, rows: list[Row]) -> str:
    lines: list[str] = []
    cores = os.cpu_count()
    lines.append(
        f"op={args.op} value={args.value_size}B per-row limit={args.seconds:g}s or {args.max_requests} requests, "
        f"warm-up {args.warmup_seconds:g}s; host {platform.machine()} {cores} cores, python {platform.python_version()}"
    )
    lines.append(
        "Same load generator for every target: closed-loop grpc.aio clients in spawned worker processes "
        f"(procs={'auto' if args.procs == 0 else args.procs}, {args.clients_per_channel} clients per channel), "
        "on the same machine as the server."
    )
    show_round = args.repeat > 1
    disturbed = 0
    header = (
        f"{'target':<10} {'round':>5} " * show_round + f"{'target':<10} " * (not show_round) + f"{'clients':>7} "
        f"{'procs':>5} {'requests':>9} {'errors':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'gen cpu':>7} {'srv cpu':>7} {'srv us/req':>10} {'other':>5} {'stop':>5}"
    )
    lines += ["", header, "-" * len(header)]
    target_rank = {t: i for i, t in enumerate(args.all_targets)}
    for row in sorted(rows, key=lambda row: (row.result.spec.clients, target_rank[row.target], row.round)):
        r = row.result
        gen_cpu = f"{100 * r.generator_cpu_seconds / r.elapsed:.0f}%" if r.elapsed > 0 else "-"
        srv_cpu = (
            f"{100 * row.server_cpu_seconds / r.elapsed:.0f}%"
            if row.server_cpu_seconds is not None and r.elapsed > 0
            else "-"
        )
        per_req = _server_us_per_request(row)
        other = "-"
        if row.host_busy is not None and row.server_cpu_seconds is not None and r.elapsed > 0 and cores:
            rest = row.host_busy * cores - (r.generator_cpu_seconds + row.server_cpu_seconds) / r.elapsed
            other = f"{100 * max(0.0, rest):.0f}%"
            disturbed += rest > _DISTURBED
        lines.append(
            f"{row.target:<10} " + f"{row.round:>5} " * show_round + f"{r.spec.clients:>7} {r.spec.worker_count:>5} "
            f"{r.requests:>9} {r.errors:>6} {r.throughput:>9.0f} {fmt(r.latency_ms(50)):>8} "
            f"{fmt(r.latency_ms(99)):>8} {fmt(r.max_ms):>8} {gen_cpu:>7} {srv_cpu:>7} {fmt(per_req, 0):>10} "
            f"{other:>5} {r.stopped_by:>5}"
        )
    lines.append("")
    lines.append("gen cpu / srv cpu: CPU time of the generator processes / the server process over the measured")
    lines.append(f"interval (100% = one core; this host has {cores}). other: user+system CPU of every other process")
    lines.append("on the host (interrupt work not counted) - a large value means other jobs disturbed the figures.")
    lines.append("srv us/req: server CPU microseconds per successful request, the figure least moved by other load.")
    lines.append("stop: what ended the row (time limit or request budget).")
    ratios = []
    for clients in args.clients:
        coord = [row.result for row in rows if row.target == "coord" and row.result.spec.clients == clients]
        etcd = [row.result for row in rows if row.target == "etcd" and row.result.spec.clients == clients]
        if not coord or not etcd:
            continue
        thr = ratio([r.throughput for r in coord], [r.throughput for r in etcd])
        p50 = ratio([r.latency_ms(50) for r in coord], [r.latency_ms(50) for r in etcd])
        p99 = ratio([r.latency_ms(99) for r in coord], [r.latency_ms(99) for r in etcd])
        cost = ratio(
            [
                _server_us_per_request(row)
                for row in rows
                if row.target == "coord" and row.result.spec.clients == clients
            ],
            [
                _server_us_per_request(row)
                for row in rows
                if row.target == "etcd" and row.result.spec.clients == clients
            ],
        )
        ratios.append(
            f"  {clients:>3} clients: throughput coord/etcd = {fmt(thr)}x   "
            f"(p50 {fmt(p50)}x, p99 {fmt(p99)}x of etcd's latency; server CPU per request {fmt(cost)}x)"
        )
    if ratios:
        of = f" (medians of {args.repeat} rounds)" if args.repeat > 1 else ""
        lines += ["", f"coord/etcd ratio per concurrency{of}:", *ratios]
    ceilings = []
    for clients in args.clients:
        etcd_rates = _rates(rows, "etcd", clients)
        parts = []
        for target in (SOLO, NOOP):
            rates = _rates(rows, target, clients)
            if rates and etcd_rates:
                parts.append(f"{target}/etcd = {fmt(ratio(rates, etcd_rates))}x")
        if parts:
            ceilings.append(f"  {clients:>3} clients: " + ", ".join(parts))
    if ceilings:
        lines += [
            "",
            f"baselines, ceilings for coord here ({SOLO}: coord without replication; {NOOP}: grpc.aio doing nothing):",
            *ceilings,
        ]
    if disturbed:
        lines.append(
            f"! {disturbed} row(s) ran while other work used more than {_DISTURBED:.0%} of a core: "
            "the machine was busy, rerun on a quiet machine before quoting these figures."
        )
    for row in rows:
        r = row.result
        if r.first_error:
            where = f"{row.target} at {r.spec.clients} clients, round {row.round}"
            lines.append(f"! {where}: {r.errors} errors, first: {r.first_error}")
    return "\n".join(lines)


def to_json(args: argparse.Namespace, rows: list[Row]) -> dict[str, object]:
    return {
        "op": args.op,
        "value_size": args.value_size,
        "seconds": args.seconds,
        "max_requests": args.max_requests,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": [
            {
                "target": row.target,
                "round": row.round,
                "clients": row.result.spec.clients,
                "procs": row.result.spec.worker_count,
                "channels": row.result.spec.channel_count,
                "requests": row.result.requests,
                "errors": row.result.errors,
                "first_error": row.result.first_error,
                "elapsed_s": row.result.elapsed,
                "req_per_s": row.result.throughput,
                "p50_ms": row.result.latency_ms(50),
                "p99_ms": row.result.latency_ms(99),
                "max_ms": row.result.max_ms,
                "generator_cpu_s": row.result.generator_cpu_seconds,
                "server_cpu_s": row.server_cpu_seconds,
                "server_cpu_us_per_request": _server_us_per_request(row),
                "host_busy": row.host_busy,
                "stopped_by": row.result.stopped_by,
            }
            for row in rows
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def rendered(rows: list[Row]) -> str:
        if args.json:
            args.json.write_text(json.dumps(_no_nan(to_json(args, rows)), indent=2) + "\n")
        return render(args, rows)

    return run_main(lambda rows: run(args, rows), rendered)


def _no_nan(value: object) -> object:
    """JSON has no NaN: percentiles of a row without successful requests become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
