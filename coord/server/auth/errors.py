"""etcd's auth errors: gRPC code and message exactly as etcd 3.4 sends them (clients match on both).

The three that clients most often meet (permission denied, invalid auth token, authentication failed) live in
:mod:`coord.errors` with typed client exceptions; the others are catalogued here for the server.
"""

from __future__ import annotations

import grpc

from coord.errors import AUTH_FAILED, INVALID_AUTH_TOKEN, PERMISSION_DENIED, ErrorSpec, EtcdError

_C = grpc.StatusCode

__all__ = [
    "AUTH_FAILED",
    "AUTH_NOT_ENABLED",
    "AUTH_OLD_REVISION",
    "INVALID_AUTH_MGMT",
    "INVALID_AUTH_TOKEN",
    "NAME_TOO_LONG",
    "NO_PASSWORD_USER",
    "PERMISSION_DENIED",
    "PERMISSION_NOT_GIVEN",
    "PERMISSION_NOT_GRANTED",
    "ROLE_ALREADY_EXISTS",
    "ROLE_EMPTY",
    "ROLE_NOT_FOUND",
    "ROLE_NOT_GRANTED",
    "ROOT_ROLE_MISSING",
    "ROOT_USER_MISSING",
    "USER_ALREADY_EXISTS",
    "USER_EMPTY",
    "USER_NOT_FOUND",
]

ROOT_USER_MISSING = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: root user does not exist", EtcdError)
ROOT_ROLE_MISSING = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: root user does not have root role", EtcdError)
USER_ALREADY_EXISTS = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: user name already exists", EtcdError)
USER_EMPTY = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: user name is empty", EtcdError)
USER_NOT_FOUND = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: user name not found", EtcdError)
ROLE_ALREADY_EXISTS = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: role name already exists", EtcdError)
ROLE_NOT_FOUND = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: role name not found", EtcdError)
ROLE_EMPTY = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: role name is empty", EtcdError)
PERMISSION_NOT_GIVEN = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: permission not given", EtcdError)
ROLE_NOT_GRANTED = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user", EtcdError)
PERMISSION_NOT_GRANTED = ErrorSpec(
    _C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role", EtcdError
)
AUTH_NOT_ENABLED = ErrorSpec(_C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled", EtcdError)
INVALID_AUTH_MGMT = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: invalid auth management", EtcdError)
AUTH_OLD_REVISION = ErrorSpec(_C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old", EtcdError)
# etcd 3.4 sends this one untranslated (code UNKNOWN, the auth package's own text); clients see exactly that.
NO_PASSWORD_USER = ErrorSpec(
    _C.UNKNOWN, "auth: authentication failed, password was given for no password user", EtcdError
)
# coord's own: user and role names are LMDB keys, whose length LMDB bounds (etcd has no such limit).
NAME_TOO_LONG = ErrorSpec(_C.INVALID_ARGUMENT, "coord: user or role name is longer than 400 bytes", EtcdError)
