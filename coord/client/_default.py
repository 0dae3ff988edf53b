"""The module-level default client used by ``coord.lock(...)`` and the other module-level recipes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from coord.client._sync import Client

__all__ = ["connect", "default_client", "set_default_client"]

_lock = threading.Lock()
_default: Client | None = None


def connect(endpoints: str | Sequence[str] | None = None, **options: Any) -> Client:
    """A new blocking :class:`Client` (same parameters as :class:`coord.AsyncClient`); close it when done."""
    return Client(endpoints, **options)


def default_client() -> Client:
    """The process-wide client, created on first use from ``COORD_ENDPOINTS`` (comma-separated host:port, default
    ``127.0.0.1:2379``). Thread-safe; created at most once unless replaced with :func:`set_default_client`."""
    global _default
    with _lock:
        if _default is None:
            _default = Client()
        return _default


def set_default_client(client: Client | None) -> Client | None:
    """Replace the default client (None: the next use creates one from the environment again). Returns the previous
    one, which the caller now owns and should close."""
    global _default
    with _lock:
        previous, _default = _default, client
        return previous
