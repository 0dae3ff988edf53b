"""etcd's auth errors, as the server sends them: they live in :mod:`coord.errors` (shared with the client, which maps
them to typed exceptions) and are re-exported here for the server's auth modules."""

from __future__ import annotations

from coord.errors import (
    AUTH_FAILED,
    AUTH_NOT_ENABLED,
    AUTH_OLD_REVISION,
    INVALID_AUTH_MGMT,
    INVALID_AUTH_TOKEN,
    NAME_TOO_LONG,
    NO_PASSWORD_USER,
    PERMISSION_DENIED,
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
