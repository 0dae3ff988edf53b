"""Auth tokens, as etcd's ``--auth-token`` flag configures them: ``simple`` (default) or ``jwt,...``.

**Simple tokens** are random strings held in this member's memory (``<16 letters>.<number>``, etcd's format). A token
expires after ``--auth-token-ttl`` seconds without use (each use restarts the clock), when the member restarts, and
as soon as its user is deleted, changes password, or auth is disabled (the token remembers the user's password hash
and the auth "enable epoch" it was issued under, and is checked against the replicated state on every use, so this
holds on every member without any member-local bookkeeping at apply time). Other members do not know a simple token:
a client that moves to another member authenticates again (on ``invalid auth token``, as etcd clients do).

**JWT tokens** (``--auth-token jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]``) are signed
with the member's key (RS*, PS*, ES* with PEM keys; HS* with the priv-key file's bytes as the secret) and carry the
user name, the auth revision at issue and an expiry (default 5 minutes), so any member holding the public key can
verify them. As in etcd, a JWT issued before any later auth change is refused with ``revision of auth store is old``
(the client authenticates again).
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt

DEFAULT_TOKEN_TTL = 300  # seconds: etcd's --auth-token-ttl default
DEFAULT_JWT_TTL = 300.0
_LETTERS = string.ascii_letters
_PREFIX_LENGTH = 16
_JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"}
)


class TokenConfigError(ValueError):
    """``--auth-token`` names an unknown token type, an unknown option, or keys that cannot be read."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a valid token says: the user, and for JWT the auth revision it was issued at (None for simple tokens,
    which are checked at the current revision). ``stamp`` (simple tokens only) must still match the user's stored
    credentials for the token to be valid."""

    username: str
    revision: int | None
    stamp: bytes = b""


class TokenProvider(Protocol):
    """Issues and verifies tokens; all methods are safe to call from any thread."""

    kind: str

    def assign(self, username: str, revision: int, stamp: bytes) -> str:
        """A new token for ``username`` (authenticated at auth ``revision``; ``stamp`` identifies its credentials)."""
        ...

    def info(self, token: str) -> TokenInfo | None:
        """What ``token`` says, or None when it is unknown, expired or forged."""
        ...


class SimpleTokens:
    """Member-local random tokens with a sliding time-to-live (``ttl`` seconds; ``clock`` is injectable)."""

    kind = "simple"

    def __init__(self, ttl: float = DEFAULT_TOKEN_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise TokenConfigError("--auth-token-ttl must be > 0")
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, bytes, float]] = {}  # token -> (user, stamp, expiry)
        self._serial = 0
        self._next_sweep = clock() + ttl

    def assign(self, username: str, revision: int, stamp: bytes) -> str:
        prefix = "".join(secrets.choice(_LETTERS) for _ in range(_PREFIX_LENGTH))
        now = self._clock()
        with self._lock:
            self._serial += 1
            token = f"{prefix}.{self._serial}"
            self._tokens[token] = (username, stamp, now + self._ttl)
            if now >= self._next_sweep:
                self._tokens = {t: v for t, v in self._tokens.items() if v[2] > now}
                self._next_sweep = now + self._ttl
        return token

    def info(self, token: str) -> TokenInfo | None:
        now = self._clock()
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                return None
            username, stamp, expiry = entry
            if expiry <= now:
                del self._tokens[token]
                return None
            self._tokens[token] = (username, stamp, now + self._ttl)
        return TokenInfo(username, None, stamp)

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)


class JwtTokens:
    """Signed tokens verifiable by any member with the public key (or the HMAC secret)."""

    kind = "jwt"

    def __init__(self, algorithm: str, sign_key: Any, verify_key: Any, ttl: float = DEFAULT_JWT_TTL) -> None:
        self._algorithm = algorithm
        self._sign_key = sign_key
        self._verify_key = verify_key
        self._ttl = ttl

    def assign(self, username: str, revision: int, stamp: bytes) -> str:
        if self._sign_key is None:
            raise TokenConfigError("this member has only a public key (pub-key): it can verify tokens, not sign them")
        claims = {"username": username, "revision": revision, "exp": int(time.time() + self._ttl)}
        return jwt.encode(claims, self._sign_key, algorithm=self._algorithm)

    def self_check(self) -> None:
        """Sign and verify one token (at start-up), so unusable or mismatched keys fail the flag rather than a
        client's call; raises TokenConfigError."""
        if self._sign_key is None:
            return
        try:
            token = self.assign("check", 0, b"")
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenConfigError(f"--auth-token: the jwt keys cannot sign with {self._algorithm}: {exc}") from None
        if self.info(token) is None:
            raise TokenConfigError("--auth-token: pub-key does not verify what priv-key signs (keys do not match)")

    def info(self, token: str) -> TokenInfo | None:
        try:
            claims = jwt.decode(token, self._verify_key, algorithms=[self._algorithm])
        except jwt.PyJWTError:
            return None
        username, revision = claims.get("username"), claims.get("revision")
        if not isinstance(username, str) or not isinstance(revision, int | float) or isinstance(revision, bool):
            return None
        return TokenInfo(username, int(revision))


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        number = text[: -len(suffix)]
        if text.endswith(suffix) and number.replace(".", "", 1).isdigit():
            return float(number) * units[suffix]
    raise TokenConfigError(f"--auth-token: ttl must be a duration like 5m or 300s, got {text!r}")


def _jwt_provider(options: dict[str, str]) -> JwtTokens:
    algorithm = options.get("sign-method", "")
    if algorithm not in _JWT_ALGORITHMS:
        raise TokenConfigError(f"--auth-token: jwt needs sign-method, one of {', '.join(sorted(_JWT_ALGORITHMS))}")
    ttl = _duration_seconds(options["ttl"]) if "ttl" in options else DEFAULT_JWT_TTL

    def read(option: str) -> bytes | None:
        path = options.get(option)
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise TokenConfigError(f"--auth-token: cannot read {option} {path}: {exc}") from None

    private, public = read("priv-key"), read("pub-key")
    if algorithm.startswith("HS"):
        if not private:
            raise TokenConfigError("--auth-token: jwt with an HS* sign-method needs priv-key (the shared secret)")
        return _checked(JwtTokens(algorithm, private, private, ttl))
    from cryptography.hazmat.primitives import serialization

    try:
        sign_key = serialization.load_pem_private_key(private, password=None) if private else None
        verify_key = serialization.load_pem_public_key(public) if public else None
    except ValueError as exc:
        raise TokenConfigError(f"--auth-token: cannot load the jwt keys: {exc}") from None
    if sign_key is None and verify_key is None:
        raise TokenConfigError("--auth-token: jwt needs pub-key and/or priv-key")
    if verify_key is None:
        assert sign_key is not None
        verify_key = sign_key.public_key()
    return _checked(JwtTokens(algorithm, sign_key, verify_key, ttl))


def _checked(provider: JwtTokens) -> JwtTokens:
    provider.self_check()
    return provider


def provider_from_flag(flag: str, ttl: float = DEFAULT_TOKEN_TTL) -> TokenProvider:
    """The token provider ``--auth-token`` asks for; raises TokenConfigError for a bad value."""
    kind, *rest = [part.strip() for part in flag.split(",")]
    options: dict[str, str] = {}
    for item in rest:
        name, sep, value = item.partition("=")
        if not sep or not name or name in options:
            raise TokenConfigError(f"--auth-token: invalid option {item!r} in {flag!r}")
        options[name] = value
    if kind == "simple":
        if options:
            raise TokenConfigError("--auth-token: simple takes no options")
        return SimpleTokens(ttl)
    if kind == "jwt":
        unknown = set(options) - {"sign-method", "pub-key", "priv-key", "ttl"}
        if unknown:
            raise TokenConfigError(f"--auth-token: unknown jwt option(s) {', '.join(sorted(unknown))}")
        return _jwt_provider(options)
    raise TokenConfigError(f"--auth-token: unknown token type {kind!r} (expected simple or jwt)")
