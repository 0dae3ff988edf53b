"""Auth: users, roles, key-range permissions, tokens, and their enforcement, replicated through the log.

- :mod:`~coord.server.auth.store`: the replicated state in LMDB and the permission checks (etcd's auth store)
- :mod:`~coord.server.auth.apply`: applying auth entries and checking KV/lease entries, on every member
- :mod:`~coord.server.auth.perms`: key-range permission arithmetic and its cache
- :mod:`~coord.server.auth.tokens`: simple and JWT tokens (``--auth-token``)
- :mod:`~coord.server.auth.gate`: what the API layer asks (who is calling, may they read this)
"""

from coord.server.auth.apply import AUTH_KINDS, AuthApplier, check_name
from coord.server.auth.gate import AuthGate
from coord.server.auth.store import ROOT_ROLE, ROOT_USER, AuthStore
from coord.server.auth.tokens import JwtTokens, SimpleTokens, TokenConfigError, TokenProvider, provider_from_flag
from coord.server.requests import SYSTEM, AuthInfo

__all__ = [
    "AUTH_KINDS",
    "ROOT_ROLE",
    "ROOT_USER",
    "SYSTEM",
    "AuthApplier",
    "AuthGate",
    "AuthInfo",
    "AuthStore",
    "JwtTokens",
    "SimpleTokens",
    "TokenConfigError",
    "TokenProvider",
    "check_name",
    "provider_from_flag",
]
