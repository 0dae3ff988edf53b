"""Applying auth entries, and checking KV and lease entries against the auth state, on every member.

:class:`AuthApplier` is the applier's auth half (etcd's ``authApplierV3`` plus the auth store's mutations). Like the
rest of the applier it is deterministic and refuses a request (raising :class:`Rejected`) before writing anything.

Who may do what (etcd 3.4, checked against a running etcd):

- every auth request except Authenticate, UserGet and RoleGet needs the root role (when auth is enabled);
  UserGet is also allowed on oneself, RoleGet on a role one holds;
- Put needs write on the key, read too with prev_kv, and write on every key already attached to its lease;
  DeleteRange needs write on the range (and read with prev_kv); Txn is checked for every key of every branch and
  nested txn (see :meth:`AuthStore.check_txn`); LeaseRevoke needs write on every key attached to the lease (or the
  root role); LeaseGrant and Compaction need nothing, as in etcd 3.4.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from google.protobuf.message import Message

from coord._proto.authpb import auth_pb2
from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import (
    AUTH_FAILED,
    AUTH_NOT_ENABLED,
    INVALID_AUTH_MGMT,
    NAME_TOO_LONG,
    NO_PASSWORD_USER,
    PERMISSION_NOT_GIVEN,
    PERMISSION_NOT_GRANTED,
    ROLE_ALREADY_EXISTS,
    ROLE_EMPTY,
    ROLE_NOT_FOUND,
    ROLE_NOT_GRANTED,
    ROOT_ROLE_MISSING,
    ROOT_USER_MISSING,
    USER_ALREADY_EXISTS,
    USER_EMPTY,
    USER_NOT_FOUND,
)
from coord.server.auth.store import MAX_NAME_BYTES, ROOT_ROLE, ROOT_USER, AuthStore, has_root_role
from coord.server.mvcc import MvccReader
from coord.server.rejection import Rejected
from coord.server.requests import AuthInfo, Kind

AUTH_KINDS = frozenset(
    {
        Kind.AUTH_ENABLE,
        Kind.AUTH_DISABLE,
        Kind.AUTH_STATUS,
        Kind.AUTHENTICATE,
        Kind.USER_ADD,
        Kind.USER_GET,
        Kind.USER_LIST,
        Kind.USER_DELETE,
        Kind.USER_CHANGE_PASSWORD,
        Kind.USER_GRANT_ROLE,
        Kind.USER_REVOKE_ROLE,
        Kind.ROLE_ADD,
        Kind.ROLE_GET,
        Kind.ROLE_LIST,
        Kind.ROLE_DELETE,
        Kind.ROLE_GRANT_PERMISSION,
        Kind.ROLE_REVOKE_PERMISSION,
    }
)
# Auth requests anyone may make; the handler decides (etcd's needAdminPermission is false for these).
_NO_ADMIN_NEEDED = frozenset({Kind.AUTHENTICATE, Kind.USER_GET, Kind.ROLE_GET})


def check_name(name: str) -> None:
    """Refuse a user or role name too long to be a key (coord's limit; etcd has none)."""
    if len(name.encode()) > MAX_NAME_BYTES:
        raise Rejected(NAME_TOO_LONG)


def _hashed_password(hashed: str) -> bytes:
    """The bcrypt hash the proposer put in the entry (base64, as etcd 3.5 logs it)."""
    try:
        return base64.b64decode(hashed, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(NO_PASSWORD_USER) from None


class AuthApplier:
    """Applies auth entries and checks other entries' permissions, inside the applier's write transaction."""

    def __init__(self, store: AuthStore) -> None:
        self.store = store

    # -- permission checks for KV and lease entries -------------------------------------------------------------

    def check(self, view: MvccReader, txn: Any, kind: Kind, request: Message, info: AuthInfo | None) -> None:
        """Refuse ``request`` (raising Rejected) when the user it was made by may not do it."""
        store = self.store
        if (info is not None and info.system) or not store.enabled(txn):
            return
        if kind is Kind.PUT:
            assert isinstance(request, rpc_pb2.PutRequest)
            store.check_key(txn, info, request.key, b"", write=True)
            self._check_lease_keys(view, txn, info, request.lease)
            if request.prev_kv:
                store.check_key(txn, info, request.key, b"", write=False)
        elif kind is Kind.DELETE_RANGE:
            assert isinstance(request, rpc_pb2.DeleteRangeRequest)
            store.check_key(txn, info, request.key, request.range_end, write=True)
            if request.prev_kv:
                store.check_key(txn, info, request.key, request.range_end, write=False)
        elif kind is Kind.TXN:
            assert isinstance(request, rpc_pb2.TxnRequest)
            store.check_txn(txn, info, request)
        elif kind is Kind.LEASE_REVOKE:
            assert isinstance(request, rpc_pb2.LeaseRevokeRequest)
            self._check_lease_keys(view, txn, info, request.ID)

    def _check_lease_keys(self, view: MvccReader, txn: Any, info: AuthInfo | None, lease_id: int) -> None:
        """etcd's checkLeasePuts: unless root, the user must be able to write every key attached to the lease
        (an unknown lease, or one without keys, needs nothing)."""
        if not lease_id or self.store.is_admin(txn, info):
            return
        for key in view.lease_keys(lease_id):
            self.store.check_key(txn, info, key, b"", write=True)

    # -- auth entries -------------------------------------------------------------------------------------------

    def apply(self, txn: Any, kind: Kind, request: Message, info: AuthInfo | None) -> Message:
        """Apply one auth entry; returns its response (header left for the API layer to fill)."""
        if kind not in _NO_ADMIN_NEEDED:
            self.store.check_admin(txn, info)
        handler = getattr(self, "_" + kind.name.lower())
        response: Message = handler(txn, request, info)
        return response

    def _auth_enable(self, txn: Any, req: rpc_pb2.AuthEnableRequest, info: AuthInfo | None) -> Message:
        store = self.store
        if not store.enabled(txn):
            root = store.user(txn, ROOT_USER)
            if root is None:
                raise Rejected(ROOT_USER_MISSING)
            if not has_root_role(root):
                raise Rejected(ROOT_ROLE_MISSING)
            store.set_enabled(txn, True)
        return rpc_pb2.AuthEnableResponse()

    def _auth_disable(self, txn: Any, req: rpc_pb2.AuthDisableRequest, info: AuthInfo | None) -> Message:
        if self.store.enabled(txn):
            self.store.set_enabled(txn, False)
            self.store.bump_revision(txn)
        return rpc_pb2.AuthDisableResponse()

    def _auth_status(self, txn: Any, req: rpc_pb2.AuthStatusRequest, info: AuthInfo | None) -> Message:
        return rpc_pb2.AuthStatusResponse(enabled=self.store.enabled(txn), authRevision=self.store.revision(txn))

    def _authenticate(self, txn: Any, req: rpc_pb2.AuthenticateRequest, info: AuthInfo | None) -> Message:
        """The password was checked by the proposer; this orders the authentication in the log."""
        if not self.store.enabled(txn):
            raise Rejected(AUTH_NOT_ENABLED)
        user = self.store.user(txn, req.name)
        if user is None or user.options.no_password:
            raise Rejected(AUTH_FAILED)
        return rpc_pb2.AuthenticateResponse()

    def _user_add(self, txn: Any, req: rpc_pb2.AuthUserAddRequest, info: AuthInfo | None) -> Message:
        if not req.name:
            raise Rejected(USER_EMPTY)
        check_name(req.name)
        if self.store.user_record(txn, req.name) is not None:
            raise Rejected(USER_ALREADY_EXISTS)
        user = auth_pb2.User(
            name=req.name.encode(), options=auth_pb2.UserAddOptions(no_password=req.options.no_password)
        )
        if not req.options.no_password:
            user.password = _hashed_password(req.hashedPassword)
        self.store.put_user(txn, user)
        self.store.bump_revision(txn)
        return rpc_pb2.AuthUserAddResponse()

    def _user_get(self, txn: Any, req: rpc_pb2.AuthUserGetRequest, info: AuthInfo | None) -> Message:
        if not self.store.is_admin(txn, info) and req.name != (info.username if info else ""):
            self.store.check_admin(txn, info)
        user = self.store.user(txn, req.name)
        if user is None:
            raise Rejected(USER_NOT_FOUND)
        return rpc_pb2.AuthUserGetResponse(roles=list(user.roles))

    def _user_list(self, txn: Any, req: rpc_pb2.AuthUserListRequest, info: AuthInfo | None) -> Message:
        return rpc_pb2.AuthUserListResponse(users=[u.name.decode() for u in self.store.users(txn)])

    def _user_delete(self, txn: Any, req: rpc_pb2.AuthUserDeleteRequest, info: AuthInfo | None) -> Message:
        store = self.store
        if store.enabled(txn) and req.name == ROOT_USER:
            raise Rejected(INVALID_AUTH_MGMT)
        if store.user_record(txn, req.name) is None:
            raise Rejected(USER_NOT_FOUND)
        store.delete_user(txn, req.name)
        store.bump_revision(txn)
        return rpc_pb2.AuthUserDeleteResponse()

    def _user_change_password(
        self, txn: Any, req: rpc_pb2.AuthUserChangePasswordRequest, info: AuthInfo | None
    ) -> Message:
        user = self.store.user(txn, req.name)
        if user is None:
            raise Rejected(USER_NOT_FOUND)
        if not user.options.no_password:
            user.password = _hashed_password(req.hashedPassword)
        self.store.put_user(txn, user)
        self.store.bump_revision(txn)
        return rpc_pb2.AuthUserChangePasswordResponse()

    def _user_grant_role(self, txn: Any, req: rpc_pb2.AuthUserGrantRoleRequest, info: AuthInfo | None) -> Message:
        user = self.store.user(txn, req.user)
        if user is None:
            raise Rejected(USER_NOT_FOUND)
        if req.role != ROOT_ROLE and self.store.role_record(txn, req.role) is None:
            raise Rejected(ROLE_NOT_FOUND)
        if req.role not in user.roles:
            roles = sorted([*user.roles, req.role])
            del user.roles[:]
            user.roles.extend(roles)
            self.store.put_user(txn, user)
            self.store.bump_revision(txn)
        return rpc_pb2.AuthUserGrantRoleResponse()

    def _user_revoke_role(self, txn: Any, req: rpc_pb2.AuthUserRevokeRoleRequest, info: AuthInfo | None) -> Message:
        store = self.store
        if store.enabled(txn) and req.name == ROOT_USER and req.role == ROOT_ROLE:
            raise Rejected(INVALID_AUTH_MGMT)
        user = store.user(txn, req.name)
        if user is None:
            raise Rejected(USER_NOT_FOUND)
        if req.role not in user.roles:
            raise Rejected(ROLE_NOT_GRANTED)
        kept = [role for role in user.roles if role != req.role]
        del user.roles[:]
        user.roles.extend(kept)
        store.put_user(txn, user)
        store.bump_revision(txn)
        return rpc_pb2.AuthUserRevokeRoleResponse()

    def _role_add(self, txn: Any, req: rpc_pb2.AuthRoleAddRequest, info: AuthInfo | None) -> Message:
        if not req.name:
            raise Rejected(ROLE_EMPTY)
        check_name(req.name)
        if self.store.role_record(txn, req.name) is not None:
            raise Rejected(ROLE_ALREADY_EXISTS)
        self.store.put_role(txn, auth_pb2.Role(name=req.name.encode()))
        self.store.bump_revision(txn)
        return rpc_pb2.AuthRoleAddResponse()

    def _role_get(self, txn: Any, req: rpc_pb2.AuthRoleGetRequest, info: AuthInfo | None) -> Message:
        store = self.store
        if not store.is_admin(txn, info):
            user = store.user(txn, info.username) if info is not None and info.username else None
            if user is None or req.role not in user.roles:
                store.check_admin(txn, info)
        role = store.role(txn, req.role)
        if role is None:
            raise Rejected(ROLE_NOT_FOUND)
        return rpc_pb2.AuthRoleGetResponse(perm=list(role.keyPermission))

    def _role_list(self, txn: Any, req: rpc_pb2.AuthRoleListRequest, info: AuthInfo | None) -> Message:
        return rpc_pb2.AuthRoleListResponse(roles=[r.name.decode() for r in self.store.roles(txn)])

    def _role_delete(self, txn: Any, req: rpc_pb2.AuthRoleDeleteRequest, info: AuthInfo | None) -> Message:
        store = self.store
        if store.enabled(txn) and req.role == ROOT_ROLE:
            raise Rejected(INVALID_AUTH_MGMT)
        if store.role_record(txn, req.role) is None:
            raise Rejected(ROLE_NOT_FOUND)
        store.delete_role(txn, req.role)
        for user in store.users(txn):
            if req.role in user.roles:
                kept = [role for role in user.roles if role != req.role]
                del user.roles[:]
                user.roles.extend(kept)
                store.put_user(txn, user)
        store.bump_revision(txn)
        return rpc_pb2.AuthRoleDeleteResponse()

    def _role_grant_permission(
        self, txn: Any, req: rpc_pb2.AuthRoleGrantPermissionRequest, info: AuthInfo | None
    ) -> Message:
        if not req.HasField("perm"):
            raise Rejected(PERMISSION_NOT_GIVEN)
        role = self.store.role(txn, req.name)
        if role is None:
            raise Rejected(ROLE_NOT_FOUND)
        perms = list(role.keyPermission)
        # As etcd: only the first permission whose key is >= the new one's is a candidate for an update in place.
        first = next((i for i, p in enumerate(perms) if p.key >= req.perm.key), len(perms))
        if first < len(perms) and perms[first].key == req.perm.key and perms[first].range_end == req.perm.range_end:
            perms[first].permType = req.perm.permType
        else:
            perms.append(
                auth_pb2.Permission(permType=req.perm.permType, key=req.perm.key, range_end=req.perm.range_end)
            )
            perms.sort(key=lambda p: p.key)
        updated = auth_pb2.Role(name=role.name, keyPermission=perms)
        self.store.put_role(txn, updated)
        self.store.bump_revision(txn)
        return rpc_pb2.AuthRoleGrantPermissionResponse()

    def _role_revoke_permission(
        self, txn: Any, req: rpc_pb2.AuthRoleRevokePermissionRequest, info: AuthInfo | None
    ) -> Message:
        role = self.store.role(txn, req.role)
        if role is None:
            raise Rejected(ROLE_NOT_FOUND)
        kept = [p for p in role.keyPermission if p.key != req.key or p.range_end != req.range_end]
        if len(kept) == len(role.keyPermission):
            raise Rejected(PERMISSION_NOT_GRANTED)
        self.store.put_role(txn, auth_pb2.Role(name=role.name, keyPermission=kept))
        self.store.bump_revision(txn)
        return rpc_pb2.AuthRoleRevokePermissionResponse()
