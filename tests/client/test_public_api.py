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
