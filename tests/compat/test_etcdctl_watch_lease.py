"""Real etcdctl ``watch`` and ``lease`` commands (and ``put --lease``) print the same against the server under test as
against real etcd.

Same normalisation as tests/compat/test_etcdctl.py (ids, raft term, ports), plus what differs by design here:
- lease ids: each server picks its own, so every id a side granted is replaced by ``<L0>``, ``<L1>``, ... (hex, as
  etcdctl prints it, and decimal, as in JSON), in grant order; commands naming a lease get that side's id;
- remaining TTLs (``remaining(Ns)``, JSON ``"ttl"``) depend on when the command ran: they are blanked, and checked
  separately to be within 3 s of each other and at most the granted TTL;
- ``lease list`` prints ids in an order of the server's choosing (etcd: by expiry; coord: by id), and etcd 3.4 lists
  a lease's attached keys in random (Go map) order: both are sorted.

``etcdctl watch`` never exits on its own: it reads history with ``--rev`` (or starts at a revision known to be the
next one), so what it prints does not depend on when it connected; it is stopped (by PID) once the last expected
event is printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from coord._proto.etcdserverpb import rpc_pb2
from coord.testing import ServerProcess
from tests.compat.differential import Peer
from tests.compat.test_etcdctl import Cmd, Identity, Result, _etcdctl, c, normalise, run_etcdctl

WATCH_TIMEOUT_S = 20.0


@dataclass
class Side:
    """One server, its identity and the lease ids it granted (in order)."""

    server: ServerProcess
    ident: Identity
    leases: list[int] = field(default_factory=list)
    remaining: list[int] = field(default_factory=list)

    def fill(self, args: Sequence[str]) -> tuple[str, ...]:
        """Replace ``{L<n>}`` in the arguments by this side's n-th lease id (hex)."""
        return tuple(re.sub(r"\{L(\d+)\}", lambda m: f"{self.leases[int(m.group(1))]:x}", a) for a in args)

    def learn(self, output: str) -> None:
        for hex_id in re.findall(r"^lease ([0-9a-f]+) granted with TTL\(\d+s\)$", output, flags=re.M):
            self.leases.append(int(hex_id, 16))
        for dec_id in re.findall(r'"ID":(\d+),"TTL":\d+,"Error"', output):
            self.leases.append(int(dec_id))

    def render(self, res: Result) -> str:
        text = f"exit {res.rc}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}\n"
        for index, lease_id in enumerate(self.leases):
            text = re.sub(rf"\b0*{lease_id:x}\b", f"<L{index}>", text)
            text = re.sub(rf"\b{lease_id}\b", f"<L{index}d>", text)
        for pattern in (r"remaining\((-?\d+)s\)", r'"ttl":(-?\d+)'):
            self.remaining.extend(int(n) for n in re.findall(pattern, text))
        text = re.sub(r"remaining\(-?\d+s\)", "remaining(<n>s)", text)
        text = re.sub(r'"ttl":-?\d+', '"ttl":<n>', text)
        text = normalise(text, self.ident)
        # etcd 3.4 lists a lease's keys in Go map order (random): compare them as sets.
        text = re.sub(
            r"attached keys\(\[([^\]]*)\]\)", lambda m: f"attached keys([{' '.join(sorted(m.group(1).split()))}])", text
        )
        text = re.sub(
            r'"keys":\[([^\]]*)\]', lambda m: '"keys":[' + ",".join(sorted(m.group(1).split(","))) + "]", text
        )
        text = re.sub(
            r'"leases":\[([^\]]*)\]', lambda m: '"leases":[' + ",".join(sorted(m.group(1).split(","))) + "]", text
        )
        if "found " in text and " leases" in text:
            head, *ids = text.split("\n--- stderr")[0].splitlines()
            text = "\n".join([head, *sorted(ids)]) + "\n--- stderr" + text.split("\n--- stderr", 1)[1]
        return text


def run_sequence(ref: ServerProcess, target: ServerProcess, cmds: Sequence[Cmd]) -> None:
    import difflib

    sides = (Side(ref, Identity.of(ref)), Side(target, Identity.of(target)))
    problems: list[str] = []
    for index, cmd in enumerate(cmds):
        texts = []
        for side in sides:
            res = run_etcdctl(side.server, Cmd(side.fill(cmd.args), cmd.stdin))
            side.learn(res.stdout)
            texts.append(side.render(res))
        if texts[0] != texts[1]:
            diff = "".join(difflib.unified_diff(texts[0].splitlines(True), texts[1].splitlines(True), "etcd", "target"))
            problems.append(f"#{index}: {cmd}\n{diff}")
    assert len(sides[0].remaining) == len(sides[1].remaining), (sides[0].remaining, sides[1].remaining)
    for a, b in zip(sides[0].remaining, sides[1].remaining, strict=True):
        assert abs(a - b) <= 3, f"remaining TTLs differ too much: etcd {a}, target {b}"
    if problems:
        pytest.fail(f"{len(problems)} of {len(cmds)} etcdctl commands differ:\n\n" + "\n".join(problems), pytrace=False)


LEASE_CMDS: tuple[Cmd, ...] = (
    c("lease", "grant", "60"),
    c("lease", "grant", "30", "-w", "json"),
    c("lease", "grant", "100"),
    c("put", "--lease={L2}", "k1", "v1"),
    c("put", "--lease={L2}", "k2", "v2"),
    c("put", "k0", "v0", "--lease={L0}"),
    c("get", "k1", "-w", "json"),
    c("lease", "timetolive", "{L2}"),
    c("lease", "timetolive", "--keys", "{L2}"),
    c("lease", "timetolive", "--keys", "{L2}", "-w", "json"),
    c("lease", "timetolive", "--keys", "{L1}"),
    c("lease", "keep-alive", "--once", "{L2}"),
    c("lease", "keep-alive", "--once", "{L2}", "-w", "json"),
    c("lease", "list"),
    c("lease", "list", "-w", "json"),
    c("lease", "revoke", "{L2}"),
    c("lease", "revoke", "{L2}"),
    c("get", "k", "--prefix"),
    c("lease", "timetolive", "{L2}"),
    c("lease", "timetolive", "{L2}", "-w", "json"),
    c("lease", "keep-alive", "--once", "{L2}"),
    c("lease", "keep-alive", "--once", "1234"),
    c("lease", "revoke", "{L0}", "-w", "json"),
    c("get", "k", "--prefix", "-w", "json"),
    c("lease", "list"),
    c("lease", "grant", "0"),
    c("lease", "grant", "9000000001"),
    c("lease", "grant", "abc"),
    c("put", "k3", "v", "--lease=abc"),
    c("put", "k4", "v", "--lease=1234"),
    c("lease", "revoke"),
    c("lease", "timetolive"),
)


def test_etcdctl_lease_commands(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    run_sequence(ref_server, target_server, LEASE_CMDS)


# ---------------------------------------------------------------------------------------------------- watch


WRITES: tuple[Cmd, ...] = (
    c("put", "w/a", "1"),
    c("put", "w/b", "2"),
    c("put", "other", "x"),
    c("del", "w/a"),
    c("txn", stdin="\nput w/c 3\nput w/d 4\ndel w/b\n\n\n"),
    c("put", "w/b", "22"),
    c("put", "w/c", "33"),
    c("put", "w/end", "done"),
)


def watch_output(server: ServerProcess, args: Sequence[str], marker: str, then: Cmd | None = None) -> str:
    """Run ``etcdctl watch <args>`` until its output contains ``marker`` (after running ``then``, if given, once the
    watch printed something or half a second passed); returns what it printed on stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    argv = [_etcdctl(), f"--endpoints={server.endpoint}", "--dial-timeout=5s", "watch", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out: list[str] = []
    err: list[str] = []

    def pump(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)

    readers = [
        threading.Thread(target=pump, args=(s, k), daemon=True) for s, k in ((proc.stdout, out), (proc.stderr, err))
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        if then is not None:
            time.sleep(0.5)
            assert run_etcdctl(server, then).rc == 0
        while marker not in "".join(out) and proc.poll() is None:
            assert time.monotonic() < deadline, f"etcdctl watch {args} never printed {marker!r}: {''.join(out + err)}"
            time.sleep(0.05)
        time.sleep(0.3)  # anything printed after the marker would be a difference too
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for reader in readers:
            reader.join(5)
    code = proc.returncode if proc.returncode >= 0 else "stopped"
    return f"exit {code}\n--- stdout\n{''.join(out)}--- stderr\n{''.join(err)}"


def _revision(server: ServerProcess) -> int:
    with Peer(server.endpoint) as peer:
        return int(peer.kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=10).header.revision)


WATCHES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("--prefix", "w/", "--rev", "1"), "w/end\ndone\n"),
    (("--prefix", "w/", "--rev", "1", "--prev-kv"), "w/end\ndone\n"),
    (("--prefix", "w/", "--rev", "4"), "w/end\ndone\n"),
    (("w/b", "--rev", "1", "-w", "json"), "MjI="),
    (("--rev", "1", "w/a", "w/c"), "w/b\n22\n"),
    (("--rev", "1", "--prefix", "w/", "-w", "fields"), '"Value" : "done"'),
    (("--rev", "1", "w/c", "--prev-kv", "-w", "json"), "MzM="),
)


def test_etcdctl_watch_history_prefix_prev_kv_and_formats(
    ref_server: ServerProcess, target_server: ServerProcess
) -> None:
    import difflib

    for cmd in WRITES:
        assert run_etcdctl(ref_server, cmd).rc == 0 and run_etcdctl(target_server, cmd).rc == 0, cmd
    idents = Identity.of(ref_server), Identity.of(target_server)
    problems = []
    for args, marker in WATCHES:
        texts = [
            normalise(watch_output(s, args, marker), i)
            for s, i in zip((ref_server, target_server), idents, strict=True)
        ]
        if texts[0] != texts[1]:
            diff = "".join(difflib.unified_diff(texts[0].splitlines(True), texts[1].splitlines(True), "etcd", "target"))
            problems.append(f"etcdctl watch {' '.join(args)}\n{diff}")
    # A live watch, started at the next revision so it cannot miss the put that follows it.
    live = [
        normalise(
            watch_output(
                s, ("--prefix", "live/", "--rev", str(_revision(s) + 1)), "fresh\n", c("put", "live/x", "fresh")
            ),
            i,
        )
        for s, i in zip((ref_server, target_server), idents, strict=True)
    ]
    if live[0] != live[1]:
        problems.append(
            "live watch\n" + "".join(difflib.unified_diff(live[0].splitlines(True), live[1].splitlines(True)))
        )
    assert not problems, "\n\n".join(problems)


def test_etcdctl_watch_below_the_compact_revision(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    import difflib

    texts = []
    for server in (ref_server, target_server):
        for cmd in (*WRITES, c("compaction", "5")):
            assert run_etcdctl(server, cmd).rc == 0, cmd
        texts.append(normalise(watch_output(server, ("--prefix", "w/", "--rev", "2"), "canceled"), Identity.of(server)))
    assert texts[0] == texts[1], "".join(difflib.unified_diff(texts[0].splitlines(True), texts[1].splitlines(True)))
