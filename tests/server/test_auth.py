"""Auth on coord-server: permission arithmetic, log entry auth headers, tokens (simple and JWT), and enforcement of
every KV, Txn, Watch, Lease, Lock and maintenance call over gRPC, with etcd's codes and messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt
import pytest

import coord
from coord._proto.authpb import auth_pb2
from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from coord.errors import AuthFailedError, PermissionDeniedError
from coord.server.auth.perms import READ, READWRITE, WRITE, UnifiedPermissions
from coord.server.auth.tokens import JwtTokens, SimpleTokens, TokenConfigError, provider_from_flag
from coord.server.requests import SYSTEM, AuthInfo, Kind, decode, decode_entry, encode
from coord.testing import ServerProcess, start_coord_server

C = grpc.StatusCode
Metadata = tuple[tuple[str, str], ...]

# -- permissions, entries and tokens (no server) -------------------------------------------------------------------


def _perms(*grants: tuple[int, bytes, bytes]) -> UnifiedPermissions:
    role = auth_pb2.Role(
        name=b"r", keyPermission=[auth_pb2.Permission(permType=t, key=k, range_end=e) for t, k, e in grants]
    )
    return UnifiedPermissions.from_roles([role])


def test_key_range_permissions() -> None:
    perms = _perms(
        (READ, b"key1", b""),  # a single key
        (READWRITE, b"app/", b"app0"),  # a prefix
        (WRITE, b"log/", b"\x00"),  # every key from log/ on
        (READ, b"a", b"c"),
        (READ, b"c", b"e"),  # adjacent to [a, c): together they cover [a, e)
        (READ, b"x", b"y"),
    )
    assert perms.allows(b"key1", b"", write=False)
    assert not perms.allows(b"key1", b"", write=True)
    assert not perms.allows(b"key1!", b"", write=False)
    assert perms.allows(b"app/x", b"", write=True) and perms.allows(b"app/", b"app0", write=False)
    assert not perms.allows(b"app", b"app0", write=True)  # starts before the prefix
    assert perms.allows(b"log/1", b"", write=True) and perms.allows(b"log/", b"\x00", write=True)
    assert perms.allows(b"zzz", b"", write=True)  # from-key reaches every later key
    assert not perms.allows(b"log/", b"\x00", write=False)
    assert perms.allows(b"a", b"e", write=False) and perms.allows(b"b", b"d", write=False)
    assert not perms.allows(b"a", b"f", write=False)
    assert not perms.allows(b"a", b"y", write=False)  # gap between [c, e) and [x, y)
    assert not _perms().allows(b"k", b"", write=False)


def test_entry_auth_header_round_trip() -> None:
    put = rpc_pb2.PutRequest(key=b"k", value=b"v")
    plain = encode(Kind.PUT, 7, put)
    assert decode(plain) == (Kind.PUT, 7, put)  # entries without a header (older logs) decode as before
    assert decode_entry(plain).auth is None
    with_user = decode_entry(encode(Kind.PUT, 7, put, AuthInfo("alice", 12)))
    assert (with_user.kind, with_user.request_id, with_user.request, with_user.auth) == (
        Kind.PUT,
        7,
        put,
        AuthInfo("alice", 12),
    )
    assert decode_entry(encode(Kind.LEASE_REVOKE, 1, rpc_pb2.LeaseRevokeRequest(ID=3), SYSTEM)).auth == SYSTEM
    unicode_name = AuthInfo("jürgen", 1)
    assert decode_entry(encode(Kind.TXN, 2, rpc_pb2.TxnRequest(), unicode_name)).auth == unicode_name


def test_simple_tokens_expire_unless_used() -> None:
    now = [100.0]
    tokens = SimpleTokens(ttl=10, clock=lambda: now[0])
    token = tokens.assign("alice", 3, b"stamp")
    prefix, _, serial = token.partition(".")
    assert len(prefix) == 16 and prefix.isalpha() and serial.isdigit()
    info = tokens.info(token)
    assert info is not None and (info.username, info.revision, info.stamp) == ("alice", None, b"stamp")
    now[0] += 9
    assert tokens.info(token) is not None  # use restarts the clock
    now[0] += 9
    assert tokens.info(token) is not None
    now[0] += 10.5
    assert tokens.info(token) is None
    assert tokens.info("abcdefghijklmnop.1") is None
    assert tokens.assign("alice", 3, b"") != tokens.assign("alice", 3, b"")


def _rsa_keys(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tmp_path.mkdir(parents=True, exist_ok=True)
    private = tmp_path / "jwt.key"
    public = tmp_path / "jwt.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_jwt_tokens(tmp_path: Path) -> None:
    private, public = _rsa_keys(tmp_path)
    provider = provider_from_flag(f"jwt,pub-key={public},priv-key={private},sign-method=RS256,ttl=1m")
    assert isinstance(provider, JwtTokens)
    token = provider.assign("alice", 5, b"")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["username"] == "alice" and claims["revision"] == 5 and claims["exp"] > time.time()
    info = provider.info(token)
    assert info is not None and (info.username, info.revision) == ("alice", 5)
    assert provider.info(token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")) is None
    expired = jwt.encode({"username": "a", "revision": 1, "exp": int(time.time()) - 5}, private.read_bytes(), "RS256")
    assert provider.info(expired) is None
    verify_only = provider_from_flag(f"jwt,pub-key={public},sign-method=RS256")
    assert verify_only.info(token) is not None
    with pytest.raises(TokenConfigError):
        verify_only.assign("alice", 1, b"")
    secret = tmp_path / "secret"
    secret.write_bytes(b"a shared secret of enough length for HS256")
    hmac = provider_from_flag(f"jwt,priv-key={secret},sign-method=HS256")
    assert hmac.info(hmac.assign("bob", 2, b"")) is not None
    assert provider.info(hmac.assign("bob", 2, b"")) is None  # signed with another key
    with pytest.raises(TokenConfigError):
        provider_from_flag(f"jwt,priv-key={private},sign-method=HS256")  # a PEM key is no HMAC secret
    other_private, _ = _rsa_keys(tmp_path / "other")
    with pytest.raises(TokenConfigError):
        provider_from_flag(f"jwt,pub-key={public},priv-key={other_private},sign-method=RS256")  # mismatched pair
    for bad in ("nope", "simple,x=1", "jwt,sign-method=XX1", f"jwt,pub-key={public}", "jwt,sign-method=RS256", "jwt,a"):
        with pytest.raises(TokenConfigError):
            provider_from_flag(bad)


# -- a server with auth enabled ------------------------------------------------------------------------------------


class Stubs:
    def __init__(self, server: ServerProcess) -> None:
        self.channel = grpc.insecure_channel(server.endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.auth = rpc_pb2_grpc.AuthStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.lock = v3lock_pb2_grpc.LockStub(self.channel)

    def token(self, name: str, password: str) -> Metadata:
        return (("token", self.auth.Authenticate(rpc_pb2.AuthenticateRequest(name=name, password=password)).token),)


def refused(call: object, request: object, metadata: Metadata = ()) -> tuple[grpc.StatusCode, str]:
    """The (code, message) a call fails with; fails the test if it succeeds."""
    with pytest.raises(grpc.RpcError) as err:
        call(request, metadata=metadata, timeout=10)  # type: ignore[operator]
    return err.value.code(), err.value.details()


DENIED = (C.PERMISSION_DENIED, "etcdserver: permission denied")
USER_EMPTY = (C.INVALID_ARGUMENT, "etcdserver: user name is empty")
INVALID_TOKEN = (C.UNAUTHENTICATED, "etcdserver: invalid auth token")


def setup_auth(s: Stubs) -> None:
    """root/rootpw with the root role; alice/alicepw with readwrite on app/ and read on shared; auth enabled."""
    a = s.auth
    a.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
    a.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    a.UserAdd(rpc_pb2.AuthUserAddRequest(name="alice", password="alicepw"))
    a.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="app"))
    for perm in (
        auth_pb2.Permission(permType=READWRITE, key=b"app/", range_end=b"app0"),
        auth_pb2.Permission(permType=READ, key=b"shared"),
    ):
        a.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name="app", perm=perm))
    a.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="app"))
    s.kv.Put(rpc_pb2.PutRequest(key=b"secret", value=b"s"))
    s.kv.Put(rpc_pb2.PutRequest(key=b"shared", value=b"hello"))
    a.AuthEnable(rpc_pb2.AuthEnableRequest())


def _start(tmp_path: Path, *args: str) -> ServerProcess:
    return start_coord_server(tmp_path / "coord", extra_args=["--bcrypt-cost", "4", *args])


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Stubs]]:
    server = _start(tmp_path)
    try:
        stubs = Stubs(server)
        with stubs.channel:
            setup_auth(stubs)
            yield server, stubs
    finally:
        server.stop()


def test_credentials_and_tokens(auth_server: tuple[ServerProcess, Stubs]) -> None:
    server, s = auth_server
    root, alice = s.token("root", "rootpw"), s.token("alice", "alicepw")
    assert refused(s.kv.Range, rpc_pb2.RangeRequest(key=b"app/x")) == USER_EMPTY
    assert refused(s.kv.Put, rpc_pb2.PutRequest(key=b"app/x"), (("token", "garbage"),)) == INVALID_TOKEN
    assert refused(s.auth.Authenticate, rpc_pb2.AuthenticateRequest(name="alice", password="no")) == (
        C.INVALID_ARGUMENT,
        "etcdserver: authentication failed, invalid user ID or password",
    )
    status = s.auth.AuthStatus(rpc_pb2.AuthStatusRequest(), metadata=root)
    assert status.enabled and status.authRevision >= 7
    assert refused(s.auth.AuthStatus, rpc_pb2.AuthStatusRequest(), alice) == DENIED
    s.kv.Put(rpc_pb2.PutRequest(key=b"app/x", value=b"1"), metadata=alice)
    # A password change ends the user's tokens; the new password works.
    s.auth.UserChangePassword(rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="new"), metadata=root)
    assert refused(s.kv.Range, rpc_pb2.RangeRequest(key=b"app/x"), alice) == INVALID_TOKEN
    alice = s.token("alice", "new")
    assert s.kv.Range(rpc_pb2.RangeRequest(key=b"app/x"), metadata=alice).kvs[0].value == b"1"
    # The authorization metadata key (etcd's gateway) carries a token too.
    assert s.kv.Range(rpc_pb2.RangeRequest(key=b"app/x"), metadata=(("authorization", alice[0][1]),)).count == 1
    # With the coord client: the token is obtained and sent for every call; a foreign key is refused with a type.
    with coord.connect(server.endpoint, user="alice", password="new", timeout=10) as client:
        client.put("app/client", "v")
        assert client.get("app/client").value == b"v"
        with pytest.raises(PermissionDeniedError):
            client.put("elsewhere", "v")
    with (
        coord.connect(server.endpoint, user="alice", password="wrong", timeout=10) as client,
        pytest.raises(AuthFailedError),
    ):
        client.get("app/client")
    # Deleting the user ends its tokens; disabling auth ends every simple token.
    s.auth.UserDelete(rpc_pb2.AuthUserDeleteRequest(name="alice"), metadata=root)
    assert refused(s.kv.Range, rpc_pb2.RangeRequest(key=b"app/x"), alice) == INVALID_TOKEN
    s.auth.AuthDisable(rpc_pb2.AuthDisableRequest(), metadata=root)
    assert refused(s.kv.Range, rpc_pb2.RangeRequest(key=b"app/x"), root) == INVALID_TOKEN
    assert s.kv.Range(rpc_pb2.RangeRequest(key=b"secret")).count == 1
    assert refused(s.auth.Authenticate, rpc_pb2.AuthenticateRequest(name="root", password="rootpw")) == (
        C.FAILED_PRECONDITION,
        "etcdserver: authentication is not enabled",
    )


def test_txn_is_checked_for_every_key(auth_server: tuple[ServerProcess, Stubs]) -> None:
    _, s = auth_server
    alice = s.token("alice", "alicepw")
    put_app = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"app/t", value=b"1"))

    def txn(**kw: object) -> rpc_pb2.TxnRequest:
        return rpc_pb2.TxnRequest(**kw)  # type: ignore[arg-type]

    secret_version = rpc_pb2.Compare(key=b"secret", target=rpc_pb2.Compare.VERSION, version=1)
    assert refused(s.kv.Txn, txn(compare=[secret_version], success=[put_app]), alice) == DENIED
    read_secret = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"secret"))
    assert refused(s.kv.Txn, txn(success=[read_secret]), alice) == DENIED  # read-only txn, checked by the API
    assert refused(s.kv.Txn, txn(success=[put_app], failure=[read_secret]), alice) == DENIED  # untaken branch too
    delete_secret = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"secret"))
    nested = rpc_pb2.RequestOp(request_txn=txn(success=[delete_secret]))
    assert refused(s.kv.Txn, txn(success=[put_app, nested]), alice) == DENIED
    root = s.token("root", "rootpw")
    assert s.kv.Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=root).count == 1  # nothing was deleted
    assert s.kv.Range(rpc_pb2.RangeRequest(key=b"app/t"), metadata=root).count == 0  # nor written
    shared_value = rpc_pb2.Compare(key=b"shared", target=rpc_pb2.Compare.VALUE, value=b"hello")
    ok = s.kv.Txn(txn(compare=[shared_value], success=[put_app]), metadata=alice)
    assert ok.succeeded
    delete_prev = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"shared", prev_kv=True))
    assert refused(s.kv.Txn, txn(success=[delete_prev]), alice) == DENIED  # read-only permission on shared


def test_watch_needs_read_permission(auth_server: tuple[ServerProcess, Stubs]) -> None:
    _, s = auth_server
    alice = s.token("alice", "alicepw")

    def first_response(metadata: Metadata, key: bytes, end: bytes = b"") -> rpc_pb2.WatchResponse:
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, range_end=end))
        stream = s.watch.Watch(iter([create]), metadata=metadata, timeout=10)
        try:
            return next(iter(stream))
        finally:
            stream.cancel()

    denied = first_response(alice, b"secret")
    assert (denied.watch_id, denied.created, denied.canceled) == (-1, True, True)
    assert denied.cancel_reason == "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    anonymous = first_response((), b"app/", b"app0")
    assert anonymous.canceled and anonymous.cancel_reason.endswith("etcdserver: user name is empty")
    allowed = first_response(alice, b"app/", b"app0")
    assert allowed.created and not allowed.canceled and allowed.watch_id == 0
    assert first_response(alice, b"app/", b"b").canceled  # wider than the granted prefix


def test_lease_revoke_and_expiry(auth_server: tuple[ServerProcess, Stubs]) -> None:
    _, s = auth_server
    root, alice = s.token("root", "rootpw"), s.token("alice", "alicepw")
    held = s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), metadata=root).ID
    s.kv.Put(rpc_pb2.PutRequest(key=b"secret/leased", value=b"x", lease=held), metadata=root)
    assert refused(s.lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=held), alice) == DENIED
    assert refused(s.lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=held)) == USER_EMPTY
    # Attaching a key to a lease that holds keys one cannot write is refused (one could not revoke it).
    assert refused(s.kv.Put, rpc_pb2.PutRequest(key=b"app/l", lease=held), alice) == DENIED
    assert refused(s.lease.LeaseTimeToLive, rpc_pb2.LeaseTimeToLiveRequest(ID=held, keys=True), alice) == DENIED
    assert s.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=held), metadata=alice).grantedTTL == 60
    own = s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), metadata=alice).ID
    s.kv.Put(rpc_pb2.PutRequest(key=b"app/mine", value=b"x", lease=own), metadata=alice)
    s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=own), metadata=alice)
    s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=held), metadata=root)
    assert s.kv.Range(rpc_pb2.RangeRequest(key=b"secret/leased"), metadata=root).count == 0
    # Expiry is the server's own revoke: auth never stops it.
    short = s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2), metadata=alice).ID
    s.kv.Put(rpc_pb2.PutRequest(key=b"app/expiring", value=b"x", lease=short), metadata=alice)
    deadline = time.monotonic() + 30
    while s.kv.Range(rpc_pb2.RangeRequest(key=b"app/expiring"), metadata=alice).count:
        assert time.monotonic() < deadline, "the lease did not expire with auth enabled"
        time.sleep(0.2)


def test_admin_calls_lock_and_user_queries(auth_server: tuple[ServerProcess, Stubs]) -> None:
    _, s = auth_server
    root, alice = s.token("root", "rootpw"), s.token("alice", "alicepw")
    assert refused(s.maintenance.HashKV, rpc_pb2.HashKVRequest(), alice) == DENIED
    assert refused(s.maintenance.Defragment, rpc_pb2.DefragmentRequest(), ()) == USER_EMPTY
    s.maintenance.HashKV(rpc_pb2.HashKVRequest(), metadata=root)
    with pytest.raises(grpc.RpcError) as err:  # a streaming call, refused before it streams anything
        list(s.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), metadata=alice, timeout=10))
    assert (err.value.code(), err.value.details()) == DENIED
    snapshot = s.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), metadata=root, timeout=10)
    try:  # root passes the auth check (whether this server version streams snapshots yet or not)
        next(iter(snapshot))
    except grpc.RpcError as exc:
        assert exc.details() not in (DENIED[1], USER_EMPTY[1])
    finally:
        snapshot.cancel()
    s.maintenance.Status(rpc_pb2.StatusRequest())  # open to monitoring, as in etcd
    s.kv.Compact(rpc_pb2.CompactionRequest(revision=2), metadata=alice)  # etcd 3.4 lets any user compact
    # Lock acts with the caller's permissions (etcd's lock server runs a client with the caller's credentials).
    with pytest.raises(grpc.RpcError) as err:
        s.lock.Lock(v3lock_pb2.LockRequest(name=b"locks/x"), metadata=alice, timeout=10)
    assert (err.value.code(), err.value.details()) == (C.UNKNOWN, "etcdserver: permission denied")
    held = s.lock.Lock(v3lock_pb2.LockRequest(name=b"app/lock"), metadata=alice, timeout=10)
    assert held.key.startswith(b"app/lock/")
    s.lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key), metadata=alice, timeout=10)
    # Users see themselves and their roles; the rest needs root.
    assert list(s.auth.UserGet(rpc_pb2.AuthUserGetRequest(name="alice"), metadata=alice).roles) == ["app"]
    assert refused(s.auth.UserGet, rpc_pb2.AuthUserGetRequest(name="root"), alice) == DENIED
    assert len(s.auth.RoleGet(rpc_pb2.AuthRoleGetRequest(role="app"), metadata=alice).perm) == 2
    assert refused(s.auth.UserList, rpc_pb2.AuthUserListRequest(), alice) == DENIED
    assert refused(s.auth.RoleAdd, rpc_pb2.AuthRoleAddRequest(name="x"), alice) == DENIED
    assert refused(s.auth.UserDelete, rpc_pb2.AuthUserDeleteRequest(name="root"), root) == (
        C.INVALID_ARGUMENT,
        "etcdserver: invalid auth management",
    )
    assert refused(s.auth.RoleGrantPermission, rpc_pb2.AuthRoleGrantPermissionRequest(name="app"), root) == (
        C.INVALID_ARGUMENT,
        "etcdserver: permission not given",
    )
    assert list(s.auth.UserList(rpc_pb2.AuthUserListRequest(), metadata=root).users) == ["alice", "root"]


def test_simple_token_expires(tmp_path: Path) -> None:
    server = _start(tmp_path, "--auth-token-ttl", "1")
    try:
        s = Stubs(server)
        with s.channel:
            setup_auth(s)
            alice = s.token("alice", "alicepw")
            assert s.kv.Range(rpc_pb2.RangeRequest(key=b"shared"), metadata=alice).count == 1
            deadline = time.monotonic() + 20
            while True:  # unused for over a second, the token expires
                time.sleep(1.5)
                try:
                    s.kv.Range(rpc_pb2.RangeRequest(key=b"shared"), metadata=alice, timeout=10)
                except grpc.RpcError as exc:
                    assert (exc.code(), exc.details()) == INVALID_TOKEN
                    break
                assert time.monotonic() < deadline, "the simple token never expired"
            assert s.kv.Range(rpc_pb2.RangeRequest(key=b"shared"), metadata=s.token("alice", "alicepw")).count == 1
    finally:
        server.stop()


def test_jwt_tokens_on_the_server(tmp_path: Path) -> None:
    private, public = _rsa_keys(tmp_path)
    server = _start(tmp_path, "--auth-token", f"jwt,pub-key={public},priv-key={private},sign-method=RS256")
    try:
        s = Stubs(server)
        with s.channel:
            setup_auth(s)
            root, alice = s.token("root", "rootpw"), s.token("alice", "alicepw")
            claims = jwt.decode(alice[0][1], public.read_bytes(), algorithms=["RS256"])
            assert claims["username"] == "alice"
            s.kv.Put(rpc_pb2.PutRequest(key=b"app/j", value=b"1"), metadata=alice)
            # Any later auth change makes earlier JWTs stale (the client authenticates again), as in etcd.
            s.auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="later"), metadata=root)
            stale = (C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
            assert refused(s.kv.Put, rpc_pb2.PutRequest(key=b"app/j"), alice) == stale
            assert refused(s.kv.Range, rpc_pb2.RangeRequest(key=b"app/j"), alice) == stale
            fresh = s.token("alice", "alicepw")
            assert s.kv.Range(rpc_pb2.RangeRequest(key=b"app/j"), metadata=fresh).count == 1
            forged = jwt.encode(
                {"username": "root", "revision": 99}, "a key that is not the server key at all", algorithm="HS256"
            )
            assert refused(s.kv.Range, rpc_pb2.RangeRequest(key=b"app/j"), (("token", forged),)) == INVALID_TOKEN
    finally:
        server.stop()
