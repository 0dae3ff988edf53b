"""What the side-by-side benchmarks share: the targets, CPU accounting from /proc, clusters started for a run, the
figures' formatting and the ``main`` skeleton that always prints the rows measured so far."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from coord.testing import Cluster, ServerProcess, etcd_binary

TARGETS = ("coord", "etcd")

# Channels of the streaming benchmarks (watch, lease keep-alive): each on its own connection, large messages allowed.
STREAM_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

RowT = TypeVar("RowT")


def target_list(text: str) -> list[str]:
    """argparse type: a comma-separated subset of TARGETS, in the given order, without repeats."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values or any(v not in TARGETS for v in values):
        raise argparse.ArgumentTypeError(f"targets are a comma-separated subset of {','.join(TARGETS)}")
    return list(dict.fromkeys(values))


def require_installed(parser: argparse.ArgumentParser, targets: Sequence[str], *, etcd_needed: bool = True) -> None:
    """Stop with a usage error when etcd is a target to start but the etcd binary is missing."""
    if etcd_needed and "etcd" in targets and etcd_binary() is None:
        parser.error("etcd is not installed (apt-get install etcd-server); use --targets coord")


# ---------------------------------------------------------------------------------------------------- CPU


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, all threads, from /proc (Linux); None when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_ticks() -> tuple[int, int] | None:
    """(process busy, total) jiffies of all cores since boot, from /proc/stat (Linux); None when unreadable."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already counted in user). Busy is process time
    # only (user + nice + system), the same kind of time as the per-process figures it is compared with.
    return values[0] + values[1] + values[2], sum(values[:8])


def other_cpu(host0: tuple[int, int] | None, host1: tuple[int, int] | None, known_cores: float) -> float | None:
    """Cores used by every process not counted in ``known_cores`` between two host samples."""
    cores = os.cpu_count() or 1
    if host0 is None or host1 is None or host1[1] <= host0[1]:
        return None
    busy = (host1[0] - host0[0]) / (host1[1] - host0[1]) * cores
    return max(0.0, busy - known_cores)


# ---------------------------------------------------------------------------------------------------- clusters


@dataclass
class Target:
    """A running cluster of one kind, its leader and every member's process."""

    name: str
    cluster: Cluster
    leader: ServerProcess

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.cluster.members]

    def cpu_seconds(self) -> float | None:
        """User + system CPU of all members so far (None when unreadable)."""
        values = [cpu_seconds(m.pid) for m in self.cluster.members]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)


@contextlib.contextmanager
def clusters(names: Sequence[str], members: int, keep_data: bool) -> Iterator[dict[str, Target]]:
    """Start one cluster per target name in a temporary directory (100 ms heartbeat, 1 s election timeout, etcd's
    defaults), all up together; stop them by PID and delete the directories at the end."""
    with contextlib.ExitStack() as stack:
        out: dict[str, Target] = {}
        for name in names:
            base = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
            if not keep_data:
                stack.callback(shutil.rmtree, base, True)
            cluster = stack.enter_context(Cluster(name, base, members, heartbeat_ms=100, election_ms=1000))
            out[name] = Target(name, cluster, cluster.wait_leader(30.0))
            pids = ",".join(str(m.pid) for m in cluster.members)
            print(f"# {name}: {members} members, leader {out[name].leader.endpoint}, pids {pids}", file=sys.stderr)
        yield out


# ---------------------------------------------------------------------------------------------------- figures


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for a table: ``-`` when there is none."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: list[float], b: list[float]) -> float:
    """median(a) / median(b), NaN when undefined."""
    if not a or not b:
        return math.nan
    x, y = statistics.median(a), statistics.median(b)
    return x / y if y > 0 and not math.isnan(x) and not math.isnan(y) else math.nan


def run_main(measure: Callable[[list[RowT]], None], render: Callable[[list[RowT]], str]) -> int:
    """Run ``measure`` (which appends rows as they finish), then print whatever rows there are, even after a
    failure or Ctrl-C. Exit status: 0, 1 when the run failed (a server that did not start, a load error), 130 when
    interrupted; servers and worker processes are stopped by ``measure``'s own context managers."""
    rows: list[RowT] = []
    status = 0
    try:
        measure(rows)
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    if rows:
        print(render(rows), flush=True)
    return status
