"""Authentication with user and password, and token refresh, on real etcd and on coord-server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import coord
from coord.errors import AuthFailedError, EtcdError
from coord.testing import ServerProcess, start_coord_server, start_etcd
from tests.conftest import require_etcd


def _etcdctl(endpoint: str, *args: str) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args],
        check=True,
        capture_output=True,
        timeout=20,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(params=["etcd", "coord"])
def auth_etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with auth on, user root/rootpw, and simple tokens that expire after 2 seconds."""
    args = ["--auth-token", "simple", "--auth-token-ttl", "2"]
    if request.param == "etcd":
        require_etcd()
        server = start_etcd(tmp_path / "etcd", extra_args=args)
    else:
        server = start_coord_server(tmp_path / "coord", extra_args=[*args, "--bcrypt-cost", "4"])
    try:
        _etcdctl(server.endpoint, "user", "add", "root:rootpw")
        _etcdctl(server.endpoint, "auth", "enable")
        yield server
    finally:
        server.stop()


def test_authenticated_calls_and_token_refresh(auth_etcd: ServerProcess) -> None:
    with coord.connect(auth_etcd.endpoint, user="root", password="rootpw", timeout=5) as client:
        client.put("secret", "v")
        first_token = client.async_client._transport.token
        time.sleep(3.5)  # the simple token expires (its TTL is 2 s); the next call must re-authenticate
        assert client.get("secret").value == b"v"
        assert client.async_client._transport.token not in (None, first_token)
        with client.watch("secret") as watcher:
            client.put("secret", "w")
            assert watcher.next(timeout=5).value == b"w"


def test_wrong_password_and_missing_credentials(auth_etcd: ServerProcess) -> None:
    with (
        coord.connect(auth_etcd.endpoint, user="root", password="nope", timeout=5) as client,
        pytest.raises(AuthFailedError),
    ):
        client.get("secret")
    with coord.connect(auth_etcd.endpoint, timeout=5) as anonymous, pytest.raises(EtcdError):
        anonymous.put("secret", "v")


def _rsa_keys(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "jwt.key", directory / "jwt.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_a_token_older_than_the_auth_store_is_renewed(tmp_path: Path, kind: str) -> None:
    # A JWT token carries the auth store revision it was issued at; once users or roles change, the server answers
    # "revision of auth store is old" and the client must authenticate again (as clientv3 does), invisibly.
    private, public = _rsa_keys(tmp_path / "keys")
    args = ["--auth-token", f"jwt,pub-key={public},priv-key={private},sign-method=RS256"]
    if kind == "etcd":
        require_etcd()
        server = start_etcd(tmp_path / "etcd", extra_args=args)
    else:
        server = start_coord_server(tmp_path / "coord", extra_args=[*args, "--bcrypt-cost", "4"])
    try:
        ep = server.endpoint
        for command in (
            ["user", "add", "root:rootpw"],
            ["user", "add", "app:apppw"],
            ["role", "add", "app-role"],
            ["role", "grant-permission", "app-role", "--prefix=true", "readwrite", "app/"],
            ["user", "grant-role", "app", "app-role"],
            ["auth", "enable"],
        ):
            _etcdctl(ep, *command)  # auth is off until the last one
        with coord.connect(ep, user="app", password="apppw", timeout=5) as client:
            client.put("app/one", "1")
            first_token = client.async_client._transport.token
            _etcdctl(ep, "--user", "root:rootpw", "role", "add", "other-role")  # the auth store's revision moves on
            client.put("app/two", "2")
            assert client.get("app/two").value == b"2"
            assert client.async_client._transport.token not in (None, first_token)
    finally:
        server.stop()
