"""The etcd Auth service: users, roles, permissions, enable/disable/status, and Authenticate.

Every request goes through the log with the caller's auth header, as in etcd: the applier checks (on every member)
that the caller holds the root role where etcd requires it, then applies or answers it, so even the read-only ones
(UserGet/List, RoleGet/List, AuthStatus) are linearizable. Passwords never reach the log: UserAdd and
UserChangePassword hash them with bcrypt (``--bcrypt-cost``) here, on a worker thread, and log the hash.

Authenticate checks the password here against committed state (after a read barrier), then orders an
``AUTHENTICATE`` entry in the log, which fails if auth was disabled or the user deleted meanwhile; if the auth state
changed between the check and the entry, it checks again (etcd's loop). The token comes from the member's token
provider (see :mod:`coord.server.auth.tokens`).

:class:`AdminOnly` guards the maintenance and membership calls that need the root role when auth is enabled, as a
server interceptor, so those servicers need no auth code of their own.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.errors import AUTH_OLD_REVISION, REQUEST_TOO_LARGE
from coord.server.api.common import Headers, abort
from coord.server.auth import AuthGate, check_name
from coord.server.auth.gate import hash_password
from coord.server.auth.tokens import TokenConfigError
from coord.server.handler_wrapping import WrappedHandlers, checked_first
from coord.server.node import Node
from coord.server.rejection import Rejected
from coord.server.requests import AuthInfo, Kind, encode

Context = grpc.aio.ServicerContext[object, object]

# Authenticate retries when the auth state changes between its password check and its log entry.
_AUTHENTICATE_ATTEMPTS = 5


def _always(request: Any) -> bool:
    return True


def _alarm_changes(request: Any) -> bool:
    return isinstance(request, rpc_pb2.AlarmRequest) and request.action != rpc_pb2.AlarmRequest.GET


# gRPC method -> whether a given request of it needs the root role. etcd 3.4 requires it for Hash, HashKV,
# Defragment, Snapshot, MoveLeader and membership changes; coord also for Downgrade and for raising or clearing
# alarms. Status, Alarm GET and MemberList stay open (monitoring uses them), as does Compact (etcd 3.4 allows it to
# every user, and Kubernetes compacts with a non-root user).
ADMIN_METHODS: dict[str, Callable[[Any], bool]] = {
    "/etcdserverpb.Maintenance/Hash": _always,
    "/etcdserverpb.Maintenance/HashKV": _always,
    "/etcdserverpb.Maintenance/Defragment": _always,
    "/etcdserverpb.Maintenance/Snapshot": _always,
    "/etcdserverpb.Maintenance/MoveLeader": _always,
    "/etcdserverpb.Maintenance/Downgrade": _always,
    "/etcdserverpb.Maintenance/Alarm": _alarm_changes,
    "/etcdserverpb.Cluster/MemberAdd": _always,
    "/etcdserverpb.Cluster/MemberRemove": _always,
    "/etcdserverpb.Cluster/MemberUpdate": _always,
    "/etcdserverpb.Cluster/MemberPromote": _always,
}


class AdminOnly(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses the calls of :data:`ADMIN_METHODS` from callers without the root role (when auth is enabled) with
    etcd's ``user name is empty`` / ``user name not found`` / ``permission denied``; other calls pass untouched."""

    def __init__(self, gate: AuthGate) -> None:
        self._gate = gate
        self._checked = WrappedHandlers(self._check_admin)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or details.method not in ADMIN_METHODS:
            return handler
        return self._checked.get(details.method, handler)

    def _check_admin(self, handler: Any, method: str) -> Any:
        needs_admin = ADMIN_METHODS[method]
        gate = self._gate

        async def check(request: Any, context: Any) -> None:
            if needs_admin(request):
                try:
                    gate.check_admin(gate.credentials(context))
                except Rejected as refusal:
                    await abort(context, refusal.spec)

        return checked_first(handler, check)


_Response = TypeVar("_Response", bound=Message)


def _proposed(kind: Kind, response: type[_Response]) -> Callable[..., Awaitable[_Response]]:
    """A handler proposing its request as ``kind`` (see :meth:`AuthService._call`)."""

    async def handler(self: AuthService, request: Message, context: Context) -> _Response:
        resp = await self._call(kind, request, context)
        assert isinstance(resp, response)
        return resp

    handler.__name__ = handler.__qualname__ = kind.name.title().replace("_", "")
    return handler


class AuthService(rpc_pb2_grpc.AuthServicer):
    def __init__(self, node: Node, headers: Headers, gate: AuthGate, max_request_bytes: int = 1536 * 1024) -> None:
        self._node = node
        self._headers = headers
        self._gate = gate
        self._max_request_bytes = max_request_bytes

    def _check_size(self, request: Message) -> None:
        """etcd refuses an auth request whose proposal exceeds --max-request-bytes (it measures the request as the
        client sent it, password included), before any other check."""
        if request.ByteSize() > self._max_request_bytes:
            raise Rejected(REQUEST_TOO_LARGE)

    async def _propose(self, kind: Kind, request: Message, info: AuthInfo | None) -> Message:
        request_id = self._node.next_id()
        return await self._node.propose(request_id, encode(kind, request_id, request, info))

    async def _call(self, kind: Kind, request: Message, context: Context) -> Message:
        """Propose ``request`` as the caller; answer with its response and a full header, or etcd's error."""
        try:
            self._check_size(request)
            resp = await self._propose(kind, request, self._gate.credentials(context))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)  # type: ignore[attr-defined]
        return resp

    # Requests that go through the log as they are, answered with their response and a full header.
    AuthEnable = _proposed(Kind.AUTH_ENABLE, rpc_pb2.AuthEnableResponse)
    AuthDisable = _proposed(Kind.AUTH_DISABLE, rpc_pb2.AuthDisableResponse)
    AuthStatus = _proposed(Kind.AUTH_STATUS, rpc_pb2.AuthStatusResponse)
    UserGet = _proposed(Kind.USER_GET, rpc_pb2.AuthUserGetResponse)
    UserList = _proposed(Kind.USER_LIST, rpc_pb2.AuthUserListResponse)
    UserDelete = _proposed(Kind.USER_DELETE, rpc_pb2.AuthUserDeleteResponse)
    UserGrantRole = _proposed(Kind.USER_GRANT_ROLE, rpc_pb2.AuthUserGrantRoleResponse)
    UserRevokeRole = _proposed(Kind.USER_REVOKE_ROLE, rpc_pb2.AuthUserRevokeRoleResponse)
    RoleGet = _proposed(Kind.ROLE_GET, rpc_pb2.AuthRoleGetResponse)
    RoleList = _proposed(Kind.ROLE_LIST, rpc_pb2.AuthRoleListResponse)
    RoleDelete = _proposed(Kind.ROLE_DELETE, rpc_pb2.AuthRoleDeleteResponse)
    RoleGrantPermission = _proposed(Kind.ROLE_GRANT_PERMISSION, rpc_pb2.AuthRoleGrantPermissionResponse)
    RoleRevokePermission = _proposed(Kind.ROLE_REVOKE_PERMISSION, rpc_pb2.AuthRoleRevokePermissionResponse)

    async def Authenticate(
        self, request: rpc_pb2.AuthenticateRequest, context: Context
    ) -> rpc_pb2.AuthenticateResponse:
        try:
            token = await self._authenticate(request.name, request.password)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        except TokenConfigError as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, f"auth: {exc}")
        resp = rpc_pb2.AuthenticateResponse(token=token)
        self._headers.fill(resp.header)
        return resp

    async def _authenticate(self, name: str, password: str) -> str:
        await self._node.read_barrier()
        for _ in range(_AUTHENTICATE_ATTEMPTS):
            revision, stamp = await self._gate.check_password(name, password)
            # The entry carries the name only: the password was checked above and never enters the log.
            await self._propose(Kind.AUTHENTICATE, rpc_pb2.AuthenticateRequest(name=name), None)
            if self._gate.revision() == revision:
                return self._gate.tokens.assign(name, revision, stamp)
        raise Rejected(AUTH_OLD_REVISION)

    async def UserAdd(self, request: rpc_pb2.AuthUserAddRequest, context: Context) -> rpc_pb2.AuthUserAddResponse:
        entry = rpc_pb2.AuthUserAddRequest(name=request.name)
        entry.options.no_password = request.options.no_password
        try:
            self._check_size(request)
            check_name(request.name)
            # Refuse a caller who may not add users before spending a bcrypt hash on it (the applier checks again).
            self._gate.check_admin(self._gate.credentials(context))
            if not request.options.no_password:
                entry.hashedPassword = await self._hash(request.password)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        resp = await self._call(Kind.USER_ADD, entry, context)
        assert isinstance(resp, rpc_pb2.AuthUserAddResponse)
        return resp

    async def UserChangePassword(
        self, request: rpc_pb2.AuthUserChangePasswordRequest, context: Context
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        try:
            self._check_size(request)
            self._gate.check_admin(self._gate.credentials(context))
            hashed = await self._hash(request.password)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        entry = rpc_pb2.AuthUserChangePasswordRequest(name=request.name, hashedPassword=hashed)
        resp = await self._call(Kind.USER_CHANGE_PASSWORD, entry, context)
        assert isinstance(resp, rpc_pb2.AuthUserChangePasswordResponse)
        return resp

    async def _hash(self, password: str) -> str:
        hashed = await asyncio.to_thread(hash_password, password, self._gate.bcrypt_cost)
        return base64.b64encode(hashed).decode()

    async def RoleAdd(self, request: rpc_pb2.AuthRoleAddRequest, context: Context) -> rpc_pb2.AuthRoleAddResponse:
        try:
            self._check_size(request)
            check_name(request.name)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        resp = await self._call(Kind.ROLE_ADD, request, context)
        assert isinstance(resp, rpc_pb2.AuthRoleAddResponse)
        return resp
