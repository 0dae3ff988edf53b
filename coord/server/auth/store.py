"""The replicated auth state in LMDB, and the permission checks every member makes against it.

Layout (named databases of the member's LMDB environment, see :mod:`coord.server.storage.backend`):

- ``auth_users``: user name (UTF-8) -> ``authpb.User`` (password = bcrypt hash, roles sorted, options)
- ``auth_roles``: role name (UTF-8) -> ``authpb.Role`` (permissions sorted by key)
- ``auth``: ``enabled`` (1 byte), ``revision`` (8 bytes; absent = 1, as a fresh etcd reports),
  ``enable_epoch`` (8 bytes; counts the times auth went from disabled to enabled, so tokens issued before a
  disable are never valid again)

Only the applier writes this state, inside its write transaction, so every member holds the same state after the same
entries. Checks take the transaction to read from: the applier passes its write transaction (so a check sees the
entries applied before it in the same batch), the API layer a read transaction of the last committed state.

The check functions reproduce etcd 3.4's ``isOpPermitted`` and ``IsAdminPermitted``: with auth disabled everything
is allowed; otherwise a request without credentials is refused with ``user name is empty``, credentials checked at an
older auth revision with ``revision of auth store is old``, and a user lacking the permission with ``permission
denied``. Users holding the ``root`` role may do anything.
"""

from __future__ import annotations

from typing import Any

from coord._proto.authpb import auth_pb2
from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import (
    AUTH_OLD_REVISION,
    MAX_AUTH_NAME_BYTES,
    PERMISSION_DENIED,
    USER_EMPTY,
    USER_NOT_FOUND,
)
from coord.server.auth.perms import PermissionCache, UnifiedPermissions
from coord.server.rejection import Rejected
from coord.server.requests import AuthInfo
from coord.server.storage.backend import Backend, from_u64, u64

ROOT_USER = "root"
ROOT_ROLE = "root"

KEY_ENABLED = b"enabled"
KEY_REVISION = b"revision"
KEY_ENABLE_EPOCH = b"enable_epoch"

# LMDB bounds key length (511 bytes); names are keys.
MAX_NAME_BYTES = MAX_AUTH_NAME_BYTES


def has_root_role(user: auth_pb2.User) -> bool:
    return ROOT_ROLE in user.roles


class AuthStore:
    """Reads and writes of the auth state, and permission checks, inside the caller's LMDB transactions.

    Thread-safe: it holds no state of its own besides a permission cache that is keyed by the records it was built
    from (so it is never stale).
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._perms = PermissionCache()

    # -- reads --------------------------------------------------------------------------------------------------

    def enabled(self, txn: Any) -> bool:
        return bool(txn.get(KEY_ENABLED, db=self._backend.auth) == b"\x01")

    def revision(self, txn: Any) -> int:
        raw = txn.get(KEY_REVISION, db=self._backend.auth)
        return from_u64(raw) if raw else 1

    def enable_epoch(self, txn: Any) -> int:
        raw = txn.get(KEY_ENABLE_EPOCH, db=self._backend.auth)
        return from_u64(raw) if raw else 0

    def user_record(self, txn: Any, name: str) -> bytes | None:
        key = name.encode()
        if not key or len(key) > MAX_NAME_BYTES:
            return None
        raw = txn.get(key, db=self._backend.auth_users)
        return bytes(raw) if raw is not None else None

    def user(self, txn: Any, name: str) -> auth_pb2.User | None:
        raw = self.user_record(txn, name)
        return auth_pb2.User.FromString(raw) if raw is not None else None

    def role_record(self, txn: Any, name: str) -> bytes | None:
        key = name.encode()
        if not key or len(key) > MAX_NAME_BYTES:
            return None
        raw = txn.get(key, db=self._backend.auth_roles)
        return bytes(raw) if raw is not None else None

    def role(self, txn: Any, name: str) -> auth_pb2.Role | None:
        raw = self.role_record(txn, name)
        return auth_pb2.Role.FromString(raw) if raw is not None else None

    def users(self, txn: Any) -> list[auth_pb2.User]:
        """Every user, in name order."""
        with txn.cursor(db=self._backend.auth_users) as cursor:
            return [auth_pb2.User.FromString(value) for _, value in cursor]

    def roles(self, txn: Any) -> list[auth_pb2.Role]:
        """Every role, in name order."""
        with txn.cursor(db=self._backend.auth_roles) as cursor:
            return [auth_pb2.Role.FromString(value) for _, value in cursor]

    # -- writes (the applier only) ------------------------------------------------------------------------------

    def put_user(self, txn: Any, user: auth_pb2.User) -> None:
        txn.put(bytes(user.name), user.SerializeToString(), db=self._backend.auth_users)

    def delete_user(self, txn: Any, name: str) -> None:
        txn.delete(name.encode(), db=self._backend.auth_users)

    def put_role(self, txn: Any, role: auth_pb2.Role) -> None:
        txn.put(bytes(role.name), role.SerializeToString(), db=self._backend.auth_roles)

    def delete_role(self, txn: Any, name: str) -> None:
        txn.delete(name.encode(), db=self._backend.auth_roles)

    def set_enabled(self, txn: Any, enabled: bool) -> None:
        txn.put(KEY_ENABLED, b"\x01" if enabled else b"\x00", db=self._backend.auth)
        if enabled:
            txn.put(KEY_ENABLE_EPOCH, u64(self.enable_epoch(txn) + 1), db=self._backend.auth)

    def bump_revision(self, txn: Any) -> int:
        """Record that the auth state changed; returns the new auth revision."""
        revision = self.revision(txn) + 1
        txn.put(KEY_REVISION, u64(revision), db=self._backend.auth)
        return revision

    # -- checks -------------------------------------------------------------------------------------------------

    def is_admin(self, txn: Any, info: AuthInfo | None) -> bool:
        try:
            self.check_admin(txn, info)
        except Rejected:
            return False
        return True

    def check_admin(self, txn: Any, info: AuthInfo | None) -> None:
        """etcd's IsAdminPermitted: the request's user holds the root role (always true with auth disabled).

        Raises Rejected with ``user name is empty``, ``user name not found`` or ``permission denied``.
        """
        if (info is not None and info.system) or not self.enabled(txn):
            return
        if info is None or not info.username:
            raise Rejected(USER_EMPTY)
        user = self.user(txn, info.username)
        if user is None:
            raise Rejected(USER_NOT_FOUND)
        if not has_root_role(user):
            raise Rejected(PERMISSION_DENIED)

    def check_key(self, txn: Any, info: AuthInfo | None, key: bytes, range_end: bytes, write: bool) -> None:
        """etcd's isOpPermitted: the user may read (or write) every key of ``[key, range_end)`` (one key when
        ``range_end`` is empty). Raises Rejected with ``user name is empty``, ``revision of auth store is old`` or
        ``permission denied``."""
        if (info is not None and info.system) or not self.enabled(txn):
            return
        if info is None or info.revision == 0:
            raise Rejected(USER_EMPTY)
        if info.revision < self.revision(txn):
            raise Rejected(AUTH_OLD_REVISION)
        perms = self._permissions(txn, info.username)
        if perms is None or not perms.allows(key, range_end, write):
            raise Rejected(PERMISSION_DENIED)

    def _permissions(self, txn: Any, username: str) -> UnifiedPermissions | None:
        """The user's merged permissions (unlimited for a holder of the root role); None for an unknown user."""
        raw = self.user_record(txn, username)
        if raw is None:
            return None
        user = auth_pb2.User.FromString(raw)
        if has_root_role(user):
            return _ROOT
        role_records = [self.role_record(txn, name) for name in user.roles]
        cache_key = (raw, *(r or b"" for r in role_records))
        perms = self._perms.get(cache_key)
        if perms is None:
            perms = UnifiedPermissions.from_roles(auth_pb2.Role.FromString(r) for r in role_records if r is not None)
            self._perms.put(cache_key, perms)
        return perms

    def check_txn(self, txn: Any, info: AuthInfo | None, req: rpc_pb2.TxnRequest) -> None:
        """Every key a txn may read or write, in every branch and nested txn: compares and ranges need read,
        puts and deletes write (and read too when they ask for prev_kv)."""
        if (info is not None and info.system) or not self.enabled(txn):
            return
        for compare in req.compare:
            self.check_key(txn, info, compare.key, compare.range_end, write=False)
        for op in (*req.success, *req.failure):
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self.check_key(txn, info, op.request_range.key, op.request_range.range_end, write=False)
            elif kind == "request_put":
                put = op.request_put
                self.check_key(txn, info, put.key, b"", write=True)
                if put.prev_kv:
                    self.check_key(txn, info, put.key, b"", write=False)
            elif kind == "request_delete_range":
                delete = op.request_delete_range
                if delete.prev_kv:
                    self.check_key(txn, info, delete.key, delete.range_end, write=False)
                self.check_key(txn, info, delete.key, delete.range_end, write=True)
            elif kind == "request_txn":
                self.check_txn(txn, info, op.request_txn)


class _Unlimited(UnifiedPermissions):
    def __init__(self) -> None:
        super().__init__([], [])

    def allows(self, key: bytes, range_end: bytes, write: bool) -> bool:
        return True


_ROOT = _Unlimited()
