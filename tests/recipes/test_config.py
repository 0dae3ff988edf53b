"""Hot-reloading configuration on etcd and on coord-server.

Guarantees checked: a change under the prefix shows up in the live object (and its callbacks); an invalid change is
not applied, the last good value stays and the error is reported (``last_error``, ``on_error``), and the next valid
change clears it; a multi-key transaction is seen all at once (never half of it); dataclass values are coerced from
JSON or plain text; pydantic models and YAML documents work in document mode.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
import pytest

import coord
from coord.recipes.config import Config, ConfigInvalid, SyncConfig, config, on_change
from tests.client.conftest import Backend
from tests.waiting import wait_until


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclass
class Database:
    host: str = "localhost"
    port: int = 5432


@dataclass
class Settings:
    port: int = 8080
    debug: bool = False
    name: str = "web"
    ratio: float = 0.5
    hosts: list[str] = field(default_factory=list)
    mode: Literal["fast", "safe"] = "safe"
    level: Level = Level.LOW
    db: Database = field(default_factory=Database)
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")


def test_per_key_values_are_coerced_and_changes_applied(backend: Backend) -> None:
    with coord.connect(backend.endpoint, timeout=5) as client:
        for key, value in {
            "port": "9090",
            "debug": "yes",
            "name": "123",  # a str field keeps the text
            "ratio": "1",
            "hosts": '["a", "b"]',
            "mode": "fast",
            "level": "HIGH",
            "db": '{"host": "db1"}',
            "unrelated": "ignored",
        }.items():
            client.put(f"apps/web/{key}", value)
        settings = config(client, "apps/web/", Settings)
        assert isinstance(settings, SyncConfig)
        assert settings.value == Settings(
            9090, True, "123", 1.0, ["a", "b"], "fast", Level.HIGH, Database("db1", 5432), None
        )
        assert settings.port == 9090 and settings.db.host == "db1"  # attribute passthrough
        seen: list[Settings] = []
        settings.on_change(seen.append)
        client.put("apps/web/port", "9091")
        client.put("apps/web/timeout", "2.5")
        wait_until(lambda: settings.value.port == 9091 and settings.value.timeout == 2.5, 30, "the update")
        wait_until(lambda: bool(seen) and seen[-1].timeout == 2.5, 30, "the change callback")
        client.delete("apps/web/level")  # a missing key falls back to the default
        wait_until(lambda: settings.value.level is Level.LOW, 30, "the default to return")
        assert settings.last_error is None
        settings.close()

        # The decorator form, without a model: a dict of every key under the prefix.
        client.put("flags/beta", "true")
        seen_flags: list[dict[str, Any]] = []
        hook = on_change(client, "flags/", debounce=0.05)

        @hook
        def changed(values: dict[str, Any]) -> None:
            seen_flags.append(values)

        assert callable(changed)
        assert hook.config is not None and hook.config.value == {"beta": True}
        client.txn([], [coord.Put("flags/limit", "10"), coord.Put("flags/name", "plain text")])
        wait_until(lambda: bool(seen_flags) and "name" in seen_flags[-1], 30, "the callback")
        assert seen_flags[-1] == {"beta": True, "limit": 10, "name": "plain text"}
        hook.close()
        with pytest.raises(TypeError):
            on_change(client, "flags/", model=int)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            SyncConfig(client, "")


def test_invalid_change_is_reported_and_multi_key_transactions_are_atomic(backend: Backend) -> None:
    with coord.connect(backend.endpoint, timeout=5) as client:
        client.put("svc/port", "8000")
        settings = SyncConfig(client, "svc/", Settings, debounce=0.05)
        errors: list[BaseException] = []
        changes: list[Settings] = []
        settings.on_error(errors.append)
        settings.on_change(changes.append)

        for bad, reason in (("not-a-number", "got str"), ("70000", "out of range"), ('{"x": 1}', "got dict")):
            client.put("svc/port", bad)
            wait_until(lambda r=reason: any(r in str(e) for e in errors), 30, f"the error for {bad!r}")
            assert settings.value.port == 8000  # the last good value stays
            assert isinstance(settings.last_error, ConfigInvalid)
        with pytest.raises(ConfigInvalid):
            settings.reload()
        assert not changes

        client.put("svc/port", "8001")
        wait_until(lambda: settings.value.port == 8001, 30, "the valid update")
        assert settings.last_error is None
        assert settings.reload().port == 8001
        settings.close()

        client.put("svc/port", "junk")
        with pytest.raises(ConfigInvalid, match="port"):
            SyncConfig(client, "svc/", Settings)  # no last good value to keep: the first read fails loudly

    # A multi-key transaction is seen all at once: readers polling from another thread and change callbacks must
    # never see port and name from different transactions.
    with coord.connect(backend.endpoint, timeout=5) as client:
        client.txn([], [coord.Put("atomic/port", "1000"), coord.Put("atomic/name", "v1000")])
        settings = SyncConfig(client, "atomic/", Settings, debounce=0)
        mixed: list[Settings] = []
        settings.on_change(lambda s: mixed.append(s) if s.name != f"v{s.port}" else None)
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                value = settings.value
                if value.name != f"v{value.port}":
                    mixed.append(value)
                time.sleep(0.001)

        reader = threading.Thread(target=poll)
        reader.start()
        try:
            for port in range(1001, 1021):
                client.txn([], [coord.Put("atomic/port", str(port)), coord.Put("atomic/name", f"v{port}")])
            wait_until(lambda: settings.value.port == 1020, 30, "the last update")
        finally:
            stop.set()
            reader.join(30)
        assert not mixed
        settings.close()


class PydanticSettings(pydantic.BaseModel):
    port: int = 8080
    tags: list[str] = []
    level: Literal["info", "debug"] = "info"


def test_document_mode_with_pydantic_and_yaml(backend: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as client:
            await client.put("apps/api/settings.yaml", "port: 9000\ntags: [a, b]\n")
            live = await config(client, "apps/api/", PydanticSettings, key="settings.yaml", debounce=0.05)
            assert isinstance(live, Config)
            assert live.value == PydanticSettings(port=9000, tags=["a", "b"])
            assert live.port == 9000
            errors: list[Exception] = []
            live.on_error(errors.append)
            await client.put("apps/api/settings.yaml", "port: [unclosed")  # not YAML
            await client.put("apps/api/other", "changes outside the document key are not watched")
            async with asyncio.timeout(30):
                while not errors:
                    await asyncio.sleep(0.02)
            assert "invalid YAML" in str(errors[-1]) and live.value.port == 9000
            await client.put("apps/api/settings.yaml", '{"port": "9001", "level": "loud"}')  # JSON, invalid level
            async with asyncio.timeout(30):
                while len(errors) < 2:
                    await asyncio.sleep(0.02)
            assert "level" in str(errors[-1]) and live.value.port == 9000
            await client.put("apps/api/settings.yaml", "port: 9002\nlevel: debug\n")
            async with asyncio.timeout(30):
                while live.value.port != 9002:
                    await asyncio.sleep(0.02)
            assert live.value.level == "debug" and live.last_error is None
            # The decorator form on the async client: the callback runs in this loop after each change.
            hook = on_change(client, "apps/api/", PydanticSettings, key="settings.yaml", debounce=0.05)
            hooked: list[PydanticSettings] = []

            @hook
            async def reconfigure(new: PydanticSettings) -> None:
                hooked.append(new)

            await hook.ready()
            await client.delete("apps/api/settings.yaml")  # gone: every field takes its default
            async with asyncio.timeout(30):
                while live.value != PydanticSettings() or not hooked:
                    await asyncio.sleep(0.02)
            assert hooked[-1] == PydanticSettings()
            await hook.aclose()
            await live.close()

    asyncio.run(scenario())
