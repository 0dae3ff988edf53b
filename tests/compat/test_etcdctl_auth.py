"""Real etcdctl's user, role and auth commands against coord-server print what they print against real etcd 3.4.

Each group runs the same etcdctl command sequence against a fresh real etcd and a fresh server under test and compares
exit code, stdout and stderr of every command (with the normalisation of ``test_etcdctl``). The groups cover user and
role administration, enabling auth (etcdctl creates the root role and grants it), put/get with ``--user``, permission
denied on a key outside the user's role, a wrong password, and the admin-only commands for a non-root user.

A last test checks that users, roles, grants and the enabled flag survive a coord-server restart on the same data dir.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coord.testing import ServerProcess
from tests.compat.conftest import COMPAT_TARGET, require_target, start_target
from tests.compat.test_etcdctl import Cmd, c, compare_sequence, run_etcdctl
from tests.conftest import require_etcd

ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:alicepw")

SETUP: tuple[Cmd, ...] = (
    c("user", "add", "root:rootpw"),
    c("user", "add", "alice:alicepw"),
    c("role", "add", "app"),
    c("role", "grant-permission", "app", "readwrite", "app/", "--prefix"),
    c("role", "grant-permission", "app", "read", "shared"),
    c("user", "grant-role", "alice", "app"),
    c("put", "secret", "s"),
    c("put", "shared", "hello"),
    c("auth", "enable"),
)

AUTH_GROUPS: dict[str, tuple[Cmd, ...]] = {
    "users": (
        c("user", "add", "root:rootpw"),
        c("user", "add", "root:other"),
        c("user", "add", "bob:bobpw"),
        c("user", "add", "nopw", "--no-password"),
        c("user", "list"),
        c("user", "list", "-w", "json"),
        c("user", "get", "bob"),
        c("user", "get", "missing"),
        c("user", "passwd", "bob", "--interactive=false", stdin="newpw\n"),
        c("user", "passwd", "missing", "--interactive=false", stdin="x\n"),
        c("user", "grant-role", "bob", "nosuchrole"),
        c("user", "grant-role", "ghost", "root"),
        c("user", "revoke-role", "bob", "root"),
        c("user", "grant-role", "bob", "root"),
        c("user", "grant-role", "bob", "root"),
        c("user", "get", "bob", "-w", "json"),
        c("user", "revoke-role", "bob", "root"),
        c("user", "delete", "bob"),
        c("user", "delete", "bob"),
        c("user", "list"),
    ),
    "roles": (
        c("role", "add", "r1"),
        c("role", "add", "r1"),
        c("role", "add", ""),
        c("role", "grant-permission", "r1", "read", "foo"),
        c("role", "grant-permission", "r1", "write", "foo"),
        c("role", "grant-permission", "r1", "readwrite", "pre", "--prefix"),
        c("role", "grant-permission", "r1", "read", "fk", "--from-key"),
        c("role", "grant-permission", "r1", "read", "a", "c"),
        c("role", "grant-permission", "r1", "read", "", "--prefix"),
        c("role", "grant-permission", "nope", "read", "x"),
        c("role", "get", "r1"),
        c("role", "get", "r1", "-w", "json"),
        c("role", "get", "nope"),
        c("role", "list"),
        c("role", "revoke-permission", "r1", "foo"),
        c("role", "revoke-permission", "r1", "foo"),
        c("role", "revoke-permission", "r1", "pre", "--prefix"),
        c("role", "revoke-permission", "r1", "fk", "--from-key"),
        c("role", "get", "r1"),
        c("role", "delete", "r1"),
        c("role", "delete", "r1"),
        c("role", "list", "-w", "json"),
    ),
    "enable": (
        c("auth", "enable"),
        c("user", "add", "root:rootpw"),
        c("auth", "disable"),
        c("auth", "enable"),
        c("role", "list"),
        c("role", "list", *ROOT),
        c("user", "get", "root", *ROOT),
        c("role", "get", "root", *ROOT),
        c("auth", "enable", *ROOT),
        c("user", "delete", "root", *ROOT),
        c("role", "delete", "root", *ROOT),
        c("user", "revoke-role", "root", "root", *ROOT),
        c("auth", "disable", *ROOT),
        c("auth", "disable"),
        c("user", "list"),
        c("put", "k", "v"),
    ),
    "access": (
        *SETUP,
        c("put", "app/x", "1"),
        c("get", "secret"),
        c("put", "app/x", "1", "--user", "alice:wrong"),
        c("put", "app/x", "1", "--user", "nobody:pw"),
        c("put", "app/x", "1", *ALICE),
        c("put", "app/y", "2", "--prev-kv", *ALICE),
        c("get", "app/", "--prefix", *ALICE),
        c("get", "app/x", *ALICE),
        c("get", "shared", *ALICE),
        c("put", "shared", "no", *ALICE),
        c("get", "secret", *ALICE),
        c("put", "secret", "x", *ALICE),
        c("del", "secret", *ALICE),
        c("get", "", "--prefix", *ALICE),
        c("del", "app/", "--prefix", *ALICE),
        c("txn", *ALICE, stdin='value("app/x") = "1"\n\nput app/z 3\n\nput secret x\n\n'),
        c("txn", *ALICE, stdin='value("secret") = "s"\n\nput app/z 3\n\n\n'),
        c("get", "", "--prefix", *ROOT),
        c("user", "list", *ALICE),
        c("user", "get", "alice", *ALICE),
        c("user", "get", "root", *ALICE),
        c("role", "get", "app", *ALICE),
        c("role", "list", *ALICE),
        c("role", "add", "mine", *ALICE),
        c("auth", "disable", *ALICE),
        c("user", "passwd", "alice", "--interactive=false", *ROOT, stdin="changed\n"),
        c("get", "app/x", *ALICE),
        c("get", "app/x", "--user", "alice:changed"),
        c("role", "revoke-permission", "app", "app/", "--prefix", *ROOT),
        c("get", "app/x", "--user", "alice:changed"),
        c("user", "revoke-role", "alice", "app", *ROOT),
        c("get", "shared", "--user", "alice:changed"),
        c("compaction", "2", "--user", "alice:changed"),
    ),
}


@pytest.mark.parametrize("group", sorted(AUTH_GROUPS))
def test_etcdctl_auth_group(ref_server: ServerProcess, target_server: ServerProcess, group: str) -> None:
    compare_sequence(ref_server, target_server, AUTH_GROUPS[group])


def test_auth_survives_restart(tmp_path: Path) -> None:
    """Users, roles, grants and the enabled flag are replicated state: a restarted member enforces them unchanged."""
    require_etcd()
    require_target()
    if COMPAT_TARGET != "coord":
        pytest.skip("restart check is for coord-server")
    data_dir = tmp_path / "member"
    server = start_target(data_dir, ("--bcrypt-cost", "4"))
    try:
        for cmd in SETUP:
            assert run_etcdctl(server, cmd).rc == 0, cmd
        assert run_etcdctl(server, c("put", "app/before", "1", *ALICE)).rc == 0
    finally:
        server.stop()
    server = start_target(data_dir, ("--bcrypt-cost", "4"))
    try:
        ok = run_etcdctl(server, c("get", "app/before", "--print-value-only", *ALICE))
        assert (ok.rc, ok.stdout) == (0, "1\n")
        denied = run_etcdctl(server, c("get", "secret", *ALICE))
        assert denied.rc == 1 and "etcdserver: permission denied" in denied.stderr
        anonymous = run_etcdctl(server, c("get", "secret"))
        assert anonymous.rc == 1 and "etcdserver: user name is empty" in anonymous.stderr
        users = run_etcdctl(server, c("user", "list", *ROOT))
        assert (users.rc, users.stdout) == (0, "alice\nroot\n")
        role = run_etcdctl(server, c("role", "get", "app", *ROOT))
        assert role.rc == 0 and "[app/, app0) (prefix app/)" in role.stdout
    finally:
        server.stop()
