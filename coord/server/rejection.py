"""The one exception the server raises for a request it refuses; the API layer turns it into a gRPC status."""

from __future__ import annotations

from coord.errors import ErrorSpec


class Rejected(Exception):
    """A request refused with etcd's error ``spec`` (gRPC code and message)."""

    def __init__(self, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec
