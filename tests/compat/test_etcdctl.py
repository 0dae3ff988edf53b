"""Real etcdctl (API v3) against the server under test prints what it prints against real etcd.

Each command group runs the same etcdctl command sequence against a fresh real etcd and a fresh server under test,
and compares exit code, stdout and stderr of every command after normalising what legitimately differs between two
servers: cluster and member ids (decimal and hex), raft term and indexes, db sizes, durations, server versions,
ports/URLs and log timestamps/client ids. Revisions, keys, values, counts and error messages are compared as they are.
Tables are compared cell by cell (column widths follow cell lengths, so they are not compared).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from coord._proto.etcdserverpb import rpc_pb2
from coord.testing import ServerProcess
from tests.compat.conftest import COMPAT_TARGET
from tests.compat.differential import Peer


@dataclass(frozen=True)
class Cmd:
    """One etcdctl invocation: arguments after the global flags, and optional stdin."""

    args: tuple[str, ...]
    stdin: str | None = None

    def __str__(self) -> str:
        text = "etcdctl " + " ".join(repr(a) if (" " in a or not a) else a for a in self.args)
        return text + (f" <<< {self.stdin!r}" if self.stdin is not None else "")


def c(*args: str, stdin: str | None = None) -> Cmd:
    return Cmd(tuple(args), stdin)


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


def _etcdctl() -> str:
    path = shutil.which("etcdctl")
    if path is None:
        pytest.skip("etcdctl is not installed (apt-get install etcd-client)")
    return path


def run_etcdctl(server: ServerProcess, cmd: Cmd) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    argv = [_etcdctl(), f"--endpoints={server.endpoint}", "--dial-timeout=5s", "--command-timeout=10s", *cmd.args]
    proc = subprocess.run(argv, input=cmd.stdin, capture_output=True, text=True, env=env, timeout=30, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Identity:
    """What differs between two servers by design, as learnt from the server over gRPC."""

    client_port: int
    peer_port: int
    cluster_id: int
    member_id: int

    @classmethod
    def of(cls, server: ServerProcess) -> Identity:
        with Peer(server.endpoint) as peer:
            resp = peer.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=10)
        return cls(server.client_port, server.peer_port, int(resp.header.cluster_id), int(resp.header.member_id))


_JSON_NUMBER_FIELDS = (
    "raft_term",
    "raftTerm",
    "raftIndex",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
)
_FIELDS_NUMBER_KEYS = ("RaftTerm", "RaftIndex", "RaftAppliedIndex", "DBSize", "DBSizeInUse")
_TABLE_VOLATILE = {"DB SIZE", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "VERSION", "TOOK"}


def _normalise_table(text: str) -> str:
    """Tables: drop border lines, strip cell padding, and blank volatile columns by header name."""
    out: list[str] = []
    header: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("+-"):
            continue
        if not line.startswith("|"):
            header = None
            out.append(line)
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        else:
            cells = [
                "<v>" if i < len(header) and header[i] in _TABLE_VOLATILE else cell for i, cell in enumerate(cells)
            ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _normalise_log_line(line: str) -> str:
    """etcdctl's client-side zap log lines: drop the timestamp and the per-process client target."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    record.pop("ts", None)
    record.pop("target", None)
    return json.dumps(record, sort_keys=True)


def normalise(text: str, ident: Identity) -> str:
    text = text.replace(f"127.0.0.1:{ident.client_port}", "<client>")
    text = text.replace(f"127.0.0.1:{ident.peer_port}", "<peer>")
    for value, name in ((ident.cluster_id, "<cluster_id>"), (ident.member_id, "<member_id>")):
        text = re.sub(rf"\b{value}\b", name, text)
        text = re.sub(rf"\b{value:x}\b", name, text)
    for field in _JSON_NUMBER_FIELDS:
        text = re.sub(rf'"{field}":\d+', f'"{field}":<n>', text)
    for field in _FIELDS_NUMBER_KEYS:
        text = re.sub(rf'^"{field}" : \d+$', f'"{field}" : <n>', text, flags=re.M)
    text = re.sub(r'"version":"[^"]*"', '"version":<version>', text)
    text = re.sub(r'^"Version" : "[^"]*"$', '"Version" : <version>', text, flags=re.M)
    text = re.sub(r'"took":"[^"]*"', '"took":<duration>', text)
    text = re.sub(r"took = [0-9.]+[a-zµ]+", "took = <duration>", text)
    # endpoint status, simple format: endpoint, id, version, db size, leader, learner, term, index, applied, errors
    text = re.sub(
        r"^(<client>, <member_id>), [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, ",
        r"\1, <version>, <size>, \2, \3, <n>, <n>, <n>, ",
        text,
        flags=re.M,
    )
    text = _normalise_table(text)
    return "\n".join(_normalise_log_line(line) for line in text.splitlines())


# ---------------------------------------------------------------------------- the command groups

SEED_KEYS: tuple[Cmd, ...] = (
    c("put", "a", "1"),
    c("put", "a/1", "x"),
    c("put", "a/2", "y"),
    c("put", "a/3", "x"),
    c("put", "ab", "z"),
    c("put", "b", "2"),
    c("put", "c", "3"),
    c("put", "a/2", "yy"),
    c("put", "a", "11"),
    c("put", "a/1", "x"),
)

GROUPS: dict[str, tuple[Cmd, ...]] = {
    "put": (
        c("put", "foo", "bar"),
        c("put", "foo", "bar2", "--prev-kv"),
        c("put", "foo", "bar3", "--prev-kv", "-w", "json"),
        c("put", "new", "v", "--prev-kv"),
        c("put", "foo", "--ignore-value"),
        c("put", "foo", "--ignore-value", "-w", "json"),
        c("put", "missing", "--ignore-value"),
        c("put", "foo", "again", "--ignore-lease"),
        c("put", "missing2", "x", "--ignore-lease"),
        c("put", "foo", "v", "--lease=1234"),
        c("put", "", "x"),
        c("put", "spaces key", "value with spaces"),
        c("put", "foo", "bar", "-w", "fields"),
        c("get", "", "--prefix", "-w", "json"),
    ),
    "get": (
        *SEED_KEYS,
        c("get", "a"),
        c("get", "missing"),
        c("get", "a", "--prefix"),
        c("get", "a", "--from-key"),
        c("get", "a", "c"),
        c("get", "c", "a"),
        c("get", "", "--prefix"),
        c("get", "", "--from-key", "--keys-only"),
        c("get", "a", "--prefix", "--limit", "2"),
        c("get", "a", "--prefix", "--limit", "2", "-w", "json"),
        c("get", "a", "--rev", "2"),
        c("get", "a", "--rev", "9", "-w", "json"),
        c("get", "a", "--prefix", "--rev", "5"),
        c("get", "a", "--rev", "999"),
        c("get", "a", "--prefix", "--keys-only"),
        c("get", "a", "--prefix", "--count-only"),
        c("get", "a", "--prefix", "--count-only", "-w", "json"),
        c("get", "a", "--prefix", "--print-value-only"),
        c("get", "a", "--prefix", "-w", "json"),
        c("get", "a", "--prefix", "-w", "fields"),
        c("get", "a", "--prefix", "--hex"),
        c("get", "a", "--prefix", "--consistency=s"),
        c("get", "a", "--prefix", "--min-mod-revision", "5"),
        c("get", "a", "--prefix", "--max-mod-revision", "5"),
        c("get", "a", "--prefix", "--min-create-revision", "3"),
        c("get", "a", "--prefix", "--max-create-revision", "3"),
        *(
            c("get", "a", "--prefix", f"--sort-by={target}", f"--order={order}")
            for target in ("KEY", "CREATE", "MODIFY", "VALUE", "VERSION")
            for order in ("ASCEND", "DESCEND")
        ),
        c("get", "a", "--prefix", "--sort-by=VALUE"),
        c("get", "a", "--prefix", "--order=DESCEND", "--limit", "2"),
        c("get", "a", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit", "1", "-w", "json"),
        c("get", ""),
    ),
    "del": (
        *SEED_KEYS,
        c("del", "missing"),
        c("del", "b"),
        c("del", "b"),
        c("del", "c", "--prev-kv"),
        c("del", "a/", "--prefix"),
        c("put", "a/1", "again"),
        c("put", "a/2", "again"),
        c("del", "a/", "--prefix", "--prev-kv"),
        c("put", "a/1", "again"),
        c("del", "a/", "--prefix", "--prev-kv", "-w", "json"),
        c("put", "x", "1"),
        c("put", "y", "2"),
        c("del", "a", "y"),
        c("del", "x", "--from-key", "--prev-kv"),
        c("del", ""),
        c("get", "", "--prefix", "-w", "json"),
    ),
    "txn": (
        *SEED_KEYS,
        c("txn", "-i", stdin='value("a") = "11"\n\nput t1 v1\nget a\n\nput t1 failed\n\n'),
        c("txn", "-i", stdin='value("a") = "nope"\n\nput t2 v\n\nput t2 failed\ndel a/3\n\n'),
        c("txn", "-w", "json", stdin='mod("a") > "0"\nversion("a/2") = "2"\n\nget a/ --prefix\ndel ab\n\n\n'),
        c("txn", stdin='create("missing") = "0"\n\nput missing created\n\n\n'),
        c("txn", stdin='version("missing") > "0"\n\n\nget b\n\n'),
        c("txn", stdin='value("missing") = ""\n\nput m x\n\nput m y\n\n'),
        c("txn", stdin='mod("a") < "3"\n\n\n\n'),
        c("txn", stdin='mod("a") != "3"\n\nput --prev-kv z 1\n\n\n'),
        c("txn", stdin="\n\nput d 1\nput d 2\n\n\n"),
        c("txn", stdin="\n\nput e 1\ndel e\n\n\n"),
        c("txn", "-w", "json", stdin="\n\n\n\n"),
        c("txn", stdin="\n\nput --ignore-value missing-iv\n\n\n"),
        c("get", "", "--prefix", "-w", "json"),
    ),
    "compaction": (
        *SEED_KEYS,
        c("compaction", "5"),
        c("compaction", "5"),
        c("compaction", "3"),
        c("compaction", "999"),
        c("get", "a", "--rev", "4"),
        c("get", "a", "--rev", "5"),
        c("get", "a", "--prefix", "--rev", "6", "-w", "json"),
        c("compaction", "--physical", "8"),
        c("get", "a", "--rev", "7"),
        c("get", "a", "--prefix", "--rev", "8"),
        c("compaction", "11"),
        c("compaction", "11"),
        c("get", "", "--prefix", "-w", "json"),
    ),
    "endpoint": (
        c("put", "foo", "bar"),
        c("endpoint", "status"),
        c("endpoint", "status", "-w", "json"),
        c("endpoint", "status", "-w", "table"),
        c("endpoint", "status", "-w", "fields"),
        c("endpoint", "health"),
        c("endpoint", "health", "-w", "json"),
        c("endpoint", "health", "-w", "table"),
        c("endpoint", "status", "--cluster", "-w", "json"),
        c("endpoint", "health", "--cluster"),
        c("endpoint", "status", "-w", "json", "--hex"),
    ),
    "member": (
        c("member", "list"),
        c("member", "list", "-w", "json"),
        c("member", "list", "-w", "table"),
        c("member", "list", "-w", "fields"),
        c("member", "list", "-w", "json", "--hex"),
    ),
}


def _render(res: Result, ident: Identity) -> str:
    return f"exit {res.rc}\n--- stdout\n{normalise(res.stdout, ident)}\n--- stderr\n{normalise(res.stderr, ident)}\n"


def compare_sequence(ref: ServerProcess, target: ServerProcess, cmds: tuple[Cmd, ...]) -> None:
    """Run ``cmds`` in order on both servers; collect every mismatch and fail once, with readable diffs."""
    import difflib

    ref_id, target_id = Identity.of(ref), Identity.of(target)
    problems: list[str] = []
    for index, cmd in enumerate(cmds):
        a = _render(run_etcdctl(ref, cmd), ref_id)
        b = _render(run_etcdctl(target, cmd), target_id)
        if a != b:
            diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "etcd", COMPAT_TARGET))
            problems.append(f"#{index}: {cmd}\n{diff}")
    if problems:
        pytest.fail(f"{len(problems)} of {len(cmds)} etcdctl commands differ:\n\n" + "\n".join(problems), pytrace=False)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_etcdctl_group(ref_server: ServerProcess, target_server: ServerProcess, group: str) -> None:
    compare_sequence(ref_server, target_server, GROUPS[group])


def _http_get(base_url: str, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"{base_url}{path}", timeout=10) as resp:
            return int(resp.status), resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.headers.get("Content-Type", ""), err.read().decode()
    except (OSError, http.client.HTTPException) as err:  # e.g. a gRPC-only port answering HTTP/1.1 with HTTP/2
        return -1, "", f"no HTTP/1.1 answer: {type(err).__name__}: {str(err)[:80]!r}"


HTTP_CHECKS: dict[str, Callable[[str], object]] = {
    # /version: same keys; values are version strings (normalised to their shape).
    # /version: etcd's keys with version-shaped values ("N.N.N"); an extra key of the server's own (coord adds
    # {"coord": "<its version>"}) is allowed, as Go and Python clients decode into structs that ignore unknown keys.
    "/version": lambda body: {
        k: re.sub(r"\d+", "N", v) for k, v in json.loads(body).items() if k in ("etcdserver", "etcdcluster")
    },
    "/health": lambda body: body,  # byte for byte: {"health":"true"}, as Go writes it
}


@pytest.mark.parametrize("where", ["client-port", "http-url"])
@pytest.mark.parametrize("path", sorted(HTTP_CHECKS))
def test_http_endpoints(ref_server: ServerProcess, target_server: ServerProcess, path: str, where: str) -> None:
    """GET /health and /version: same status and JSON shape as etcd.

    ``client-port``: on the client URL, where etcd serves them (and what clients and load balancers probe).
    ``http-url``: on the server's separate HTTP listener when it has one (``extra["http_url"]``), so the answers'
    content is checked even while the port differs.
    """
    if where == "client-port" and "http_url" in target_server.extra:
        pytest.skip("coord-server serves HTTP on --listen-client-http-urls, not on the gRPC port (README)")
    base = target_server.url if where == "client-port" else target_server.extra.get("http_url", target_server.url)
    status_a, _, body_a = _http_get(ref_server.url, path)
    status_b, _, body_b = _http_get(base, path)
    view = HTTP_CHECKS[path]
    message = f"GET {base}{path}\netcd: {status_a} {body_a!r}\n{COMPAT_TARGET}: {status_b} {body_b!r}"
    assert status_b == status_a, message
    assert view(body_b) == view(body_a), message
