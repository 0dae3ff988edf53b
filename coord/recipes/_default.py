"""The module-level recipe forms (``coord.lock(...)``, ``coord.election(...)``, ...): the same factories as
:class:`coord.Client`'s, on :func:`coord.default_client` (created on first use from ``COORD_ENDPOINTS``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from coord.client import default_client
from coord.recipes._common import NameLike
from coord.recipes.counter import SyncCounter
from coord.recipes.election_sync import SyncElection
from coord.recipes.lock import SyncLock
from coord.recipes.rwlock import SyncRWLock
from coord.recipes.semaphore import SyncSemaphore
from coord.recipes.stm import SyncSTMTransaction

if TYPE_CHECKING:
    from coord.recipes.barrier import SyncBarrier, SyncDoubleBarrier
    from coord.recipes.config import ChangeHook, Format, SyncConfig
    from coord.recipes.queue import SyncQueue
    from coord.recipes.registry import SyncRegistration, SyncServiceView

__all__ = [
    "barrier",
    "config",
    "counter",
    "discover",
    "double_barrier",
    "election",
    "lock",
    "on_change",
    "queue",
    "register",
    "rwlock",
    "semaphore",
    "stm",
]

T = TypeVar("T")


def lock(name: NameLike, *, ttl: int | None = None, timeout: float | None = None) -> SyncLock:
    """A distributed lock on the default client: ``with coord.lock("jobs", ttl=10, timeout=30) as lock:``.
    See :class:`coord.Lock` for the guarantees."""
    return default_client().lock(name, ttl=ttl, timeout=timeout)


def rwlock(name: NameLike, *, ttl: int | None = None, timeout: float | None = None) -> SyncRWLock:
    """A read/write lock on the default client: ``with coord.rwlock("cfg").write():``."""
    return default_client().rwlock(name, ttl=ttl, timeout=timeout)


def semaphore(name: NameLike, limit: int, *, ttl: int | None = None, timeout: float | None = None) -> SyncSemaphore:
    """A counting semaphore on the default client: ``with coord.semaphore("gpu", 4):``."""
    return default_client().semaphore(name, limit, ttl=ttl, timeout=timeout)


def election(name: NameLike, *, ttl: int | None = None) -> SyncElection:
    """A leader election on the default client: ``with coord.election("scheduler").campaign("me"):``."""
    return default_client().election(name, ttl=ttl)


def counter(name: NameLike, *, max_attempts: int = 64) -> SyncCounter:
    """A shared integer counter on the default client: ``coord.counter("visits").increment()``."""
    return default_client().counter(name, max_attempts=max_attempts)


def stm(fn: Callable[[SyncSTMTransaction], T], *, max_attempts: int = 16) -> T:
    """Run ``fn(tx)`` as a serializable transaction on the default client, retried on conflict."""
    return default_client().stm(fn, max_attempts=max_attempts)


def barrier(name: str, *, ephemeral: bool = False, ttl: int | None = None) -> SyncBarrier:
    """A barrier on the default client: ``coord.barrier("deploy").wait(timeout=60)``."""
    return default_client().barrier(name, ephemeral=ephemeral, ttl=ttl)


def double_barrier(name: str, count: int, *, ttl: int | None = None) -> SyncDoubleBarrier:
    """A double barrier on the default client: ``with coord.double_barrier("step", 3):``."""
    return default_client().double_barrier(name, count, ttl=ttl)


def queue(
    name: str,
    *,
    visibility_timeout: float = 30,
    max_deliveries: int | None = 5,
    dead_letter: str | None = None,
    recheck_interval: float = 5.0,
) -> SyncQueue:
    """A work queue on the default client: ``coord.queue("emails").put({"to": ...})``."""
    return default_client().queue(
        name, visibility_timeout=visibility_timeout, max_deliveries=max_deliveries, dead_letter=dead_letter,
        recheck_interval=recheck_interval,
    )  # fmt: skip


def register(
    service: str,
    address: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    ttl: int | None = None,
    instance_id: str | None = None,
    status: str = "up",
) -> SyncRegistration:
    """Register an instance of ``service`` on the default client: ``coord.register("api", "10.0.0.5:8080")``."""
    return default_client().register(
        service, address, metadata=metadata, ttl=ttl, instance_id=instance_id, status=status
    )


def discover(service: str, *, strategy: Literal["round_robin", "random"] = "round_robin") -> SyncServiceView:
    """A live view of ``service`` on the default client: ``coord.discover("api").pick()``."""
    return default_client().discover(service, strategy=strategy)


def config(
    prefix: str,
    model: type[Any] | None = None,
    *,
    key: str | None = None,
    format: Format = "auto",
    debounce: float = 0.1,
) -> SyncConfig[Any]:
    """Hot-reloading configuration on the default client: ``coord.config("apps/web/", Settings).value``."""
    return default_client().config(prefix, model, key=key, format=format, debounce=debounce)


def on_change(
    prefix: str,
    model: type[Any] | None = None,
    *,
    key: str | None = None,
    format: Format = "auto",
    debounce: float = 0.1,
) -> ChangeHook:
    """Decorator on the default client: ``@coord.on_change("apps/web/")`` calls the function after every change."""
    return default_client().on_change(prefix, model, key=key, format=format, debounce=debounce)
