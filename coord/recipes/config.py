"""Hot-reloading configuration: a live model instance kept in step with the keys under a prefix.

:class:`Config` is the implementation, :class:`SyncConfig` its blocking form over a :class:`coord.Client`;
:func:`config` picks the form matching the client, and :func:`on_change` is the decorator form for callbacks.

Storage, per-key mode (default): one key per field, ``<prefix><field name>`` (a ``-`` in the key stands for ``_``),
each value JSON or plain text (see :mod:`coord.recipes._config_model` for the coercion rules); keys that are not
fields are ignored. Document mode (``key="settings.yaml"``): the one key ``<prefix><key>`` holds a JSON or YAML
document (YAML needs PyYAML). A missing key means "use the field's default".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

from coord.client import AsyncClient, Client, WatchEvent
from coord.errors import ClientClosedError, CoordError
from coord.recipes._config_model import build, check_model, decode_value, field_names, parse_document
from coord.recipes._support import (
    CallbackQueue,
    ConfigInvalid,
    PrefixWatch,
    async_client_of,
    in_thread,
    run_sync,
)

__all__ = ["ChangeHook", "Config", "ConfigInvalid", "SyncConfig", "config", "on_change"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Format = Literal["auto", "json", "yaml"]
F = TypeVar("F", bound=Callable[..., Any])


class Config(Generic[T]):
    """A configuration object that follows the store: ``config.value`` is always the latest valid model instance.

    Example::

        @dataclass
        class Settings:
            port: int = 8080
            debug: bool = False
            hosts: list[str] = field(default_factory=list)

        async with Config(client, "apps/web/", Settings) as settings:     # reads apps/web/port, apps/web/debug, ...
            print(settings.port)                                          # attribute access passes through to .value

            @settings.on_change
            def reconfigure(new: Settings) -> None: ...

    Parameters:
        client: an :class:`coord.AsyncClient`.
        prefix: the key prefix (usually ending in ``/``).
        model: a dataclass, a pydantic v2 model, or None for a plain ``dict`` of every key under the prefix (keys
            relative to the prefix, values decoded as JSON or kept as text).
        key: document mode: read the one key ``prefix + key`` holding a JSON or YAML document.
        format: for document mode: ``"json"``, ``"yaml"``, or ``"auto"`` (JSON, else YAML).
        debounce: seconds to wait after a change before reading, so that a burst of writes is applied once.

    Guarantees: every value is built from keys read at one revision, and replaces the previous one in a single step,
    so readers (in any thread) never see half an update. An update that does not fit the model is not applied: the
    last good value stays, and the error is logged, kept in :attr:`last_error` and passed to :meth:`on_error`
    callbacks; the next valid update clears it. Changes are never lost: after the debounce, the latest state is read.
    ``start`` raises ConfigInvalid when the initial configuration does not fit the model (there is no last good value
    to keep).
    """

    @overload
    def __init__(
        self: Config[dict[str, Any]],
        client: AsyncClient,
        prefix: str,
        model: None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> None: ...
    @overload
    def __init__(
        self: Config[T],
        client: AsyncClient,
        prefix: str,
        model: type[T],
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> None: ...
    def __init__(
        self,
        client: AsyncClient,
        prefix: str,
        model: type[Any] | None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> None:
        check_model(model)
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, not {prefix!r}")
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"key must be a non-empty str, not {key!r}")
        if format not in ("auto", "json", "yaml"):
            raise ValueError(f"format must be 'auto', 'json' or 'yaml', not {format!r}")
        if debounce < 0:
            raise ValueError(f"debounce must be >= 0, not {debounce}")
        self._client = async_client_of(client)
        self.prefix = prefix
        self.model = model
        self.key = key
        self.format = format
        self.debounce = debounce
        self.revision = 0
        self.last_error: ConfigInvalid | CoordError | None = None
        self._value: T | None = None
        self._fields = field_names(model)
        self._read_revision = 0  # the revision of the last read, valid or not
        self._wanted = 0  # the newest revision known to have changed something under the prefix
        self._changes = CallbackQueue("config-change")
        self._errors = CallbackQueue("config-error")
        self._watch: PrefixWatch | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    @property
    def value(self) -> T:
        """The current model instance. Raises RuntimeError before :meth:`start`."""
        if self._value is None:
            raise RuntimeError(f"config {self.prefix!r} has not been read yet: await start() (or async with) first")
        return self._value

    def __getattr__(self, name: str) -> Any:
        # Only reached for names Config itself lacks: pass them through to the model instance.
        if name.startswith("_") or self.__dict__.get("_value") is None:
            raise AttributeError(name)
        value = self.__dict__["_value"]
        if isinstance(value, dict):
            if name in value:
                return value[name]
            raise AttributeError(name)
        return getattr(value, name)

    # --- reading ---------------------------------------------------------------------------------------------

    async def _read(self) -> tuple[T, int]:
        """Read and build at one revision; ``self._read_revision`` is set even when the result is invalid."""
        if self.key is not None:
            full_key = self.prefix + self.key
            got = await self._client.get(full_key)
            self._read_revision = got.revision
            data = {} if got.value is None else parse_document(full_key, got.value, self.format)
            if data is None:
                data = {}  # an empty YAML document
            if self.model is not None and not isinstance(data, dict):
                raise ConfigInvalid(f"{full_key}: expected a mapping at the top level, got {type(data).__name__}")
            where = full_key
        else:
            got = await self._client.range(self.prefix, prefix=True)
            self._read_revision = got.revision
            data = {}
            for kv in got.kvs:
                name = kv.key.decode(errors="replace")[len(self.prefix) :]
                if self._fields is None:
                    data[name] = decode_value(kv.key.decode(errors="replace"), kv.value)
                    continue
                field = name if name in self._fields else name.replace("-", "_")
                if field in self._fields:
                    data[field] = decode_value(kv.key.decode(errors="replace"), kv.value, self._fields[field])
            where = self.prefix
        return build(self.model, data, where), got.revision

    async def start(self) -> Config[T]:
        """Read the configuration and start following it (idempotent). Raises ConfigInvalid, and client errors."""
        if self._closed:
            raise RuntimeError(f"config {self.prefix!r} is closed")
        if not self._started:
            self._value, self.revision = await self._read()
            self._wanted = self.revision
            watch_key = self.prefix + self.key if self.key is not None else self.prefix
            self._watch = PrefixWatch(
                self._client, watch_key, self._on_event, self._resync, single_key=self.key is not None,
                name="config-watch",
            )  # fmt: skip
            await self._watch.start(self.revision + 1)
            self._started = True
        return self

    async def reload(self) -> T:
        """Read now and apply the result; returns the current value. Raises ConfigInvalid when the stored
        configuration is invalid (the last good value is kept, as for an update seen by the watch)."""
        await self._apply()
        if self.last_error is not None and self._read_revision > self.revision:
            raise self.last_error
        return self.value

    async def _apply(self) -> None:
        try:
            value, revision = await self._read()
        except ConfigInvalid as exc:
            self._report(exc)
            return
        self.last_error = None
        if revision <= self.revision:
            return
        old, self._value, self.revision = self._value, value, revision
        if _differs(old, value):
            self._changes.notify(value)

    def _report(self, error: ConfigInvalid | CoordError) -> None:
        if not isinstance(error, ConfigInvalid) and str(error) == str(self.last_error):
            return  # the same failure to read, retried: already reported
        self.last_error = error
        log.warning("config %r: keeping the last good value (revision %d): %s", self.prefix, self.revision, error)
        self._errors.notify(error)

    # --- following changes -----------------------------------------------------------------------------------

    def _on_event(self, event: WatchEvent) -> None:
        self._wanted = max(self._wanted, event.revision)
        if self._reloader is None or self._reloader.done():
            self._reloader = asyncio.get_running_loop().create_task(self._reload_loop(), name="coord-config-reload")

    async def _resync(self) -> int:
        revision = (await self._client.get(self.prefix, keys_only=True, count_only=True)).revision
        self._wanted = max(self._wanted, revision)  # something may have changed while the watch was down
        if self._reloader is None or self._reloader.done():
            self._reloader = asyncio.get_running_loop().create_task(self._reload_loop(), name="coord-config-reload")
        return revision

    async def _reload_loop(self) -> None:
        backoff = 0.5
        while self._wanted > self._read_revision and not self._closed:
            await asyncio.sleep(self.debounce)
            try:
                await self._apply()
                backoff = 0.5
            except ClientClosedError:
                return
            except CoordError as exc:
                self._report(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    # --- callbacks and lifetime ------------------------------------------------------------------------------

    def on_change(self, callback: Callable[[T], Any]) -> Callable[[T], Any]:
        """Call ``callback(new_value)`` after each applied update that changed the value (one at a time, in order;
        awaited when it returns an awaitable). Usable as a decorator; returns ``callback``."""
        self._changes.add(callback)
        return callback

    def on_error(
        self, callback: Callable[[ConfigInvalid | CoordError], Any]
    ) -> Callable[[ConfigInvalid | CoordError], Any]:
        """Call ``callback(error)`` when an update is rejected (or reading fails). Usable as a decorator."""
        self._errors.add(callback)
        return callback

    def remove_callback(self, callback: Callable[..., Any]) -> None:
        """Stop calling ``callback`` (a change or error callback)."""
        self._changes.discard(callback)
        self._errors.discard(callback)

    async def close(self) -> None:
        """Stop following the store (``value`` keeps the last value). Idempotent."""
        self._closed = True
        if self._watch is not None:
            await self._watch.close()
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        await self._changes.close()
        await self._errors.close()

    def __await__(self) -> Generator[Any, None, Config[T]]:
        return self.start().__await__()

    async def __aenter__(self) -> Config[T]:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _differs(old: object, new: object) -> bool:
    try:
        return bool(old != new)
    except Exception:
        return True


class SyncConfig(Generic[T]):
    """Blocking form of :class:`Config` over a :class:`coord.Client`; read when constructed. Callbacks run in a worker
    thread (one at a time, in order), so they may call the client.

    Example::

        settings = SyncConfig(client, "apps/web/", Settings)
        serve(port=settings.port)            # or settings.value.port
        settings.on_change(lambda new: print("reloaded", new))
    """

    @overload
    def __init__(
        self: SyncConfig[dict[str, Any]],
        client: Client,
        prefix: str,
        model: None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> None: ...
    @overload
    def __init__(
        self: SyncConfig[T],
        client: Client,
        prefix: str,
        model: type[T],
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> None: ...
    def __init__(
        self,
        client: Client,
        prefix: str,
        model: type[Any] | None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError("SyncConfig needs a coord.Client; use Config (or coord.config) with an AsyncClient")
        self._client = client
        self.config: Config[Any] = Config(client.async_client, prefix, model, key=key, format=format, debounce=debounce)
        self._wrapped: dict[Callable[..., Any], Callable[..., Any]] = {}
        run_sync(client, self.config.start())

    @property
    def value(self) -> T:
        """See :attr:`Config.value`."""
        value: T = self.config.value
        return value

    @property
    def revision(self) -> int:
        return self.config.revision

    @property
    def last_error(self) -> ConfigInvalid | CoordError | None:
        return self.config.last_error

    @property
    def prefix(self) -> str:
        return self.config.prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "config" not in self.__dict__:
            raise AttributeError(name)
        return self.__dict__["config"].__getattr__(name)

    def reload(self) -> T:
        """See :meth:`Config.reload`."""
        value: T = run_sync(self._client, self.config.reload())
        return value

    def on_change(self, callback: Callable[[T], Any]) -> Callable[[T], Any]:
        """See :meth:`Config.on_change`; ``callback`` runs in a worker thread."""
        self._wrapped[callback] = wrapped = in_thread(callback)
        self.config.on_change(wrapped)
        return callback

    def on_error(
        self, callback: Callable[[ConfigInvalid | CoordError], Any]
    ) -> Callable[[ConfigInvalid | CoordError], Any]:
        """See :meth:`Config.on_error`; ``callback`` runs in a worker thread."""
        self._wrapped[callback] = wrapped = in_thread(callback)
        self.config.on_error(wrapped)
        return callback

    def remove_callback(self, callback: Callable[..., Any]) -> None:
        wrapped = self._wrapped.pop(callback, None)
        if wrapped is not None:
            self.config.remove_callback(wrapped)

    def close(self) -> None:
        """See :meth:`Config.close`."""
        run_sync(self._client, self.config.close())

    def __enter__(self) -> SyncConfig[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@overload
def config(
    client: AsyncClient,
    prefix: str,
    model: None = None,
    *,
    key: str | None = ...,
    format: Format = ...,
    debounce: float = ...,
) -> Config[dict[str, Any]]: ...
@overload
def config(
    client: AsyncClient,
    prefix: str,
    model: type[T],
    *,
    key: str | None = ...,
    format: Format = ...,
    debounce: float = ...,
) -> Config[T]: ...
@overload
def config(
    client: Client,
    prefix: str,
    model: None = None,
    *,
    key: str | None = ...,
    format: Format = ...,
    debounce: float = ...,
) -> SyncConfig[dict[str, Any]]: ...
@overload
def config(
    client: Client,
    prefix: str,
    model: type[T],
    *,
    key: str | None = ...,
    format: Format = ...,
    debounce: float = ...,
) -> SyncConfig[T]: ...
def config(
    client: AsyncClient | Client,
    prefix: str,
    model: type[Any] | None = None,
    *,
    key: str | None = None,
    format: Format = "auto",
    debounce: float = 0.1,
) -> Config[Any] | SyncConfig[Any]:
    """The live configuration under ``prefix``. With a Client: a :class:`SyncConfig`, read on return. With an
    AsyncClient: a :class:`Config` to ``await`` or use with ``async with``."""
    if isinstance(client, AsyncClient):
        return Config(client, prefix, model, key=key, format=format, debounce=debounce)
    return SyncConfig(client, prefix, model, key=key, format=format, debounce=debounce)


class ChangeHook:
    """The decorator returned by :func:`on_change`: registers functions to call with the new configuration.

    Example::

        @on_change(client, "apps/web/")
        def reload(values: dict[str, Any]) -> None:       # {"port": 8080, "debug": True, ...} after each change
            ...

    With a :class:`coord.Client` the first decoration reads the configuration (blocking) and callbacks run in a worker
    thread. With an :class:`coord.AsyncClient` decorate inside a running event loop; the configuration is read in the
    background (``await hook.ready()`` waits for it; a failure is logged and kept in :attr:`error`) and callbacks run
    in the loop. :attr:`config` is the live :class:`Config`/:class:`SyncConfig`; :meth:`close` (blocking client) or
    ``await hook.aclose()`` stops it.
    """

    def __init__(
        self,
        client: AsyncClient | Client,
        prefix: str,
        model: type[Any] | None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> None:
        self._client = client
        self._options: dict[str, Any] = {"key": key, "format": format, "debounce": debounce}
        self._prefix, self._model = prefix, model
        self.config: Config[Any] | SyncConfig[Any] | None = None
        self._start: asyncio.Task[None] | None = None
        self.error: CoordError | None = None  # why the async form stopped, if it did
        check_model(model)

    def __call__(self, fn: F) -> F:
        if isinstance(self._client, Client):
            if self.config is None:
                self.config = SyncConfig(self._client, self._prefix, self._model, **self._options)
            self.config.on_change(fn)
            return fn
        if self.config is None:
            live: Config[Any] = Config(async_client_of(self._client), self._prefix, self._model, **self._options)
            self.config = live
            self._start = asyncio.get_running_loop().create_task(self._begin(live), name="coord-config-start")
        assert isinstance(self.config, Config)
        self.config.on_change(fn)
        return fn

    async def _begin(self, live: Config[Any]) -> None:
        try:
            await live.start()
        except CoordError as exc:
            self.error = exc
            log.error("on_change(%r): could not read the configuration: %s", live.prefix, exc)

    async def ready(self) -> None:
        """Async client: wait until the configuration has been read and is being followed. Raises the error that
        stopped it (ConfigInvalid, client errors)."""
        if self._start is not None:
            await asyncio.shield(self._start)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop (blocking client)."""
        if isinstance(self.config, SyncConfig):
            self.config.close()

    async def aclose(self) -> None:
        """Stop (async client)."""
        if self._start is not None:
            self._start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._start
        if isinstance(self.config, Config):
            await self.config.close()


def on_change(
    client: AsyncClient | Client,
    prefix: str,
    model: type[Any] | None = None,
    *,
    key: str | None = None,
    format: Format = "auto",
    debounce: float = 0.1,
) -> ChangeHook:
    """A decorator that calls the decorated function with the new configuration after every change under
    ``prefix`` (a dict of every key, or a ``model`` instance; see :class:`Config`). Returns the function unchanged."""
    return ChangeHook(client, prefix, model, key=key, format=format, debounce=debounce)
