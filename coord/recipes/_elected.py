"""``@elected``: run a function only while this process leads an election, and :func:`leadership` to reach the
leadership from inside it.

Semantics of a call of a decorated function (sync or async, function or method):

1. Campaign in the election (blocks until this process leads).
2. Run the function as leader. Inside it, :func:`leadership` returns the :class:`~coord.recipes.election.Leadership`
   (a :class:`~coord.recipes.election.SyncLeadership` with the blocking client) for fencing (``guard()``,
   ``epoch``) and for noticing loss.
3. If leadership is lost meanwhile, an async function is cancelled; a sync function cannot be interrupted, so it is
   signalled (``leadership().is_leader`` turns False, ``leadership().wait_lost()`` returns, ``check()`` raises
   :class:`coord.LeadershipLost`) and should return or raise soon. Either way, whatever it returned or raised is
   discarded, and the call goes back to 1: campaign, then run the function again from the start.
4. When the function returns, or raises, while still leader: resign, and return its value or raise its exception.

So a function that should lead forever never returns; one that does a job once per call returns when done.
KeyboardInterrupt, SystemExit and outside cancellations always resign and propagate.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import wrapt

from coord.client import AsyncClient, Client, default_client
from coord.recipes._common import BodyGuard, NameLike, Runner, bridged, check_ttl, exit_body, holder_identity
from coord.recipes._errors import LeadershipLost, NotLeader
from coord.recipes.election import Election, Leadership, _value
from coord.recipes.election_sync import SyncLeadership

if TYPE_CHECKING:
    from coord.recipes.election_sync import SyncElection

__all__ = ["elected", "leadership"]

log = logging.getLogger("coord.recipes")

F = TypeVar("F", bound=Callable[..., Any])

_current: contextvars.ContextVar[Leadership | SyncLeadership] = contextvars.ContextVar("coord_leadership")


def leadership() -> Leadership | SyncLeadership:
    """The leadership under which the current ``@elected`` function runs (a :class:`SyncLeadership` when the
    function was decorated through the blocking client, e.g. ``@coord.elected``).

    Example::

        @coord.elected("scheduler")
        def schedule() -> None:
            lead = coord.leadership()
            while not lead.wait_lost(timeout=1):
                client.txn([lead.guard()], [coord.Put("plan", make_plan())])

    Raises :class:`coord.NotLeader` outside an ``@elected`` function. It is a context variable: threads started by
    the function do not see it (pass the object along instead).
    """
    try:
        return _current.get()
    except LookupError:
        raise NotLeader("coord.leadership() is only available inside an @elected function") from None


ClientLike = Client | AsyncClient


@overload
def elected(func: F, /) -> F: ...


@overload
def elected(
    name: NameLike | None = None,
    /,
    *,
    ttl: int | None = None,
    value: NameLike | None = None,
    client: ClientLike | None = None,
) -> Callable[[F], F]: ...


def elected(
    name: NameLike | Callable[..., Any] | None = None,
    /,
    *,
    ttl: int | None = None,
    value: NameLike | None = None,
    client: ClientLike | None = None,
) -> Any:
    """Run the decorated function only while this process leads the election ``name`` (see the module docstring
    for the exact semantics).

    Example::

        @coord.elected("scheduler", ttl=5)
        async def schedule() -> None:
            while True:                       # cancelled if leadership is lost, then campaigns again
                await run_due_jobs(fence=coord.leadership().guard())
                await asyncio.sleep(1)

    Also ``@coord.elected`` (the election is named after the function: ``module.qualname``) and
    ``@client.elected("scheduler")``. ``value`` is the leader value observers see (default ``"<host>:<pid>"``);
    ``ttl`` as for :meth:`coord.AsyncClient.election`; ``client`` defaults to :func:`coord.default_client` (looked
    up at call time, not at decoration). With an :class:`coord.AsyncClient` only async functions can be decorated
    (a TypeError otherwise).
    """
    check_ttl(ttl)
    if callable(name) and not isinstance(name, str | bytes):
        return _decorate(name, None, ttl, value, client)

    def decorator(func: F) -> F:
        return _decorate(func, name, ttl, value, client)

    return decorator


def _decorate(func: F, name: NameLike | None, ttl: int | None, value: NameLike | None, client: ClientLike | None) -> F:
    if not callable(func):
        raise TypeError(f"@elected decorates a function, not {type(func).__name__}")
    election_name: NameLike = name if name is not None else f"{func.__module__}.{func.__qualname__}"
    leader_value = _value(value) if value is not None else holder_identity()
    if isinstance(client, AsyncClient) and not inspect.iscoroutinefunction(func):
        raise TypeError("an AsyncClient's @elected decorates async functions only; use the blocking coord.Client")

    if inspect.iscoroutinefunction(func):

        @wrapt.decorator
        async def run_async(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
            target = client if client is not None else default_client()
            if isinstance(target, AsyncClient):
                return await _lead_async(
                    target.election(election_name, ttl=ttl), None, leader_value, wrapped, args, kwargs
                )
            sync_election = target.election(election_name, ttl=ttl)
            return await _lead_async(sync_election.election, sync_election._runner, leader_value, wrapped, args, kwargs)

        return cast(F, run_async(func))

    @wrapt.decorator
    def run_sync(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        target = client if client is not None else default_client()
        assert isinstance(target, Client)
        return _lead_sync(target.election(election_name, ttl=ttl), leader_value, wrapped, args, kwargs)

    return cast(F, run_sync(func))


async def _lead_async(
    election: Election,
    runner: Runner | None,
    value: bytes,
    func: Callable[..., Coroutine[Any, Any, Any]],
    args: Any,
    kwargs: Any,
) -> Any:
    """Campaign, run ``func`` as leader, repeat after a loss. ``runner`` is set when ``election`` lives in the
    blocking client's loop (this task is then in another loop, and calls are bridged)."""

    async def call(coro: Coroutine[Any, Any, Any]) -> Any:
        return await (bridged(runner, coro) if runner is not None else coro)

    while True:
        lead: Leadership = await call(election._campaign(value, None))
        handle: Leadership | SyncLeadership = lead if runner is None else SyncLeadership(runner, lead)
        lead._arm(BodyGuard())
        token = _current.set(handle)
        outcome: BaseException | None = None
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            outcome = exc
        finally:
            _current.reset(token)
        guard = lead._disarm()
        error = lead.lost_error
        await call(lead.resign())
        try:
            exit_body(guard, error, outcome)
        except LeadershipLost as lost:
            log.warning("%s; campaigning again", lost)
            continue
        if outcome is not None:
            raise outcome
        return result


def _lead_sync(election: SyncElection, value: bytes, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """The blocking form of :func:`_lead_async`: ``func`` runs in the calling thread."""
    while True:
        lead = election.campaign(value)
        token = _current.set(lead)
        try:
            result = func(*args, **kwargs)
        except Exception:
            error = lead.lost_error
            lead.resign()
            if error is None:
                raise
            log.warning("%s (the function raised); campaigning again", error, exc_info=True)
            continue
        except BaseException:
            lead.resign()
            raise
        finally:
            _current.reset(token)
        error = lead.lost_error
        lead.resign()
        if error is not None:
            log.warning("%s; campaigning again", error)
            continue
        return result
