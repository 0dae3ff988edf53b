"""The names exported by ``coord`` are exactly the documented public API."""

from __future__ import annotations

import re
import types

import coord


def _documented() -> list[str]:
    doc = coord.__doc__ or ""
    section = doc.split("Public API", 1)[1].split("Errors live in", 1)[0]
    return sorted(set(re.findall(r"``([A-Za-z_][A-Za-z0-9_]*)``", section)))


def test_all_matches_the_documented_list() -> None:
    assert sorted(coord.__all__) == _documented()


def test_every_exported_name_exists_and_nothing_public_is_unlisted() -> None:
    for name in coord.__all__:
        assert hasattr(coord, name), name
    public = {n for n in dir(coord) if not n.startswith("_") and not isinstance(getattr(coord, n), types.ModuleType)}
    assert public <= set(coord.__all__)


def test_sync_client_mirrors_the_async_client() -> None:
    # The blocking facade forwards every public AsyncClient call (one mechanism, same names).
    async_names = {n for n in dir(coord.AsyncClient) if not n.startswith("_")}
    sync_names = {n for n in dir(coord.Client) if not n.startswith("_")}
    assert async_names - sync_names == set()
    assert coord.Client.get.__doc__ == coord.AsyncClient.get.__doc__


RECIPE_FACTORIES = (
    "lock", "rwlock", "semaphore", "election", "elected", "counter", "stm",
    "barrier", "double_barrier", "queue", "register", "discover", "config", "on_change",
)  # fmt: skip


def test_recipe_factories_exist_on_both_clients_and_the_module() -> None:
    import inspect

    for name in RECIPE_FACTORIES:
        assert callable(getattr(coord.AsyncClient, name)), name
        assert callable(getattr(coord.Client, name)), name
        assert callable(getattr(coord, name)), name
        # One parameter list for the three forms (the clients' first parameter is self).
        async_params = list(inspect.signature(getattr(coord.AsyncClient, name)).parameters)[1:]
        sync_params = list(inspect.signature(getattr(coord.Client, name)).parameters)[1:]
        assert async_params == sync_params, name
        if name not in ("elected", "stm"):
            assert list(inspect.signature(getattr(coord, name)).parameters) == async_params, name
    assert callable(coord.leadership)


def test_recipe_errors_are_coord_errors() -> None:
    from coord.errors import CoordError

    for error in (
        coord.LockTimeout,
        coord.LockLost,
        coord.LockNotHeld,
        coord.ElectionTimeout,
        coord.NotLeader,
        coord.LeadershipLost,
        coord.TransactionConflict,
        coord.BarrierTimeout,
        coord.QueueEmpty,
        coord.ClaimLost,
        coord.DiscoveryTimeout,
        coord.NoInstanceAvailable,
        coord.ConfigInvalid,
    ):
        assert issubclass(error, CoordError), error
    for timeout in (coord.LockTimeout, coord.ElectionTimeout, coord.BarrierTimeout, coord.QueueEmpty,
                    coord.DiscoveryTimeout):  # fmt: skip
        assert issubclass(timeout, TimeoutError), timeout
    assert issubclass(coord.LeadershipLost, coord.NotLeader)


def test_recipe_classes_open_with_a_usage_example() -> None:
    for cls in (coord.Lock, coord.SyncLock, coord.RWLock, coord.Semaphore, coord.Election, coord.SyncElection,
                coord.Leadership, coord.SyncLeadership, coord.Counter, coord.STMTransaction, coord.Barrier,
                coord.DoubleBarrier, coord.Queue, coord.QueueItem, coord.Registration, coord.ServiceView, coord.Config,
                coord.ChangeHook):  # fmt: skip
        assert "Example::" in (cls.__doc__ or ""), cls


def test_coord_client_imports_the_recipes_only_inside_the_factories() -> None:
    # coord.recipes builds on coord.client, so no module of coord.client imports it at module level (type-checking
    # imports aside): the factories import it when called.
    import ast
    from pathlib import Path

    for path in Path(coord.client.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("coord.recipes") for n in names), f"{path.name}: {ast.unparse(node)}"
