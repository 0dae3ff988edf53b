"""The queue's key layout and item envelope (private to :mod:`coord.recipes.queue`).

Every key of queue ``<name>`` lives under ``coord/queue/<name>/``::

    seq                                   bumped once per put: its revision is the item's sequence number
    items/<priority>/<sequence>           visible items, in delivery order (key order)
    delayed/<due ms>/<priority>/<seq>     items not visible before <due ms> (Unix time, milliseconds)
    inflight/<priority>/<sequence>        claimed items (the envelope, with the delivery count)
    claims/<priority>/<sequence>          one per claimed item, attached to the consumer's lease

``<priority>/<sequence>`` is the item's *slot*, its identity for life: ``<priority>`` is the priority plus 2**31,
10 decimal digits (so lower priorities sort first, negatives included), ``<sequence>`` the revision of the item's
``seq`` bump, 20 digits (FIFO within a priority; revisions are unique across the cluster, so slots are too).

An item moves between ``items``, ``delayed`` and ``inflight`` only in transactions that compare the source key's
mod revision, so at every revision it is in exactly one place, and at most one consumer holds it.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from coord.recipes._support import recipe_prefix

__all__ = ["MAX_PRIORITY", "MIN_PRIORITY", "Envelope", "QueueKeys"]

MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {priority}")
    return priority


class QueueKeys:
    """The keys of one queue (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.root = recipe_prefix("queue", name)
        self.seq = self.root + "seq"
        self.items = self.root + "items/"
        self.delayed = self.root + "delayed/"
        self.inflight = self.root + "inflight/"
        self.claims = self.root + "claims/"

    @staticmethod
    def slot(priority: int, sequence: int) -> str:
        return f"{_check_priority(priority) - MIN_PRIORITY:010d}/{sequence:020d}"

    @staticmethod
    def priority_of(slot: str) -> int:
        return int(slot.split("/", 1)[0]) + MIN_PRIORITY

    def item(self, slot: str) -> str:
        return self.items + slot

    def claim(self, slot: str) -> str:
        return self.claims + slot

    def in_flight(self, slot: str) -> str:
        return self.inflight + slot

    def delayed_key(self, due: float, slot: str) -> str:
        return f"{self.delayed}{self.due_code(due)}/{slot}"

    @staticmethod
    def due_code(due: float) -> str:
        return f"{max(int(due * 1000), 0):015d}"

    def slot_of(self, key: bytes, prefix: str) -> str:
        """The slot in ``key`` under ``prefix`` (items, claims or inflight)."""
        return key.decode()[len(prefix) :]

    def parse_delayed(self, key: bytes) -> tuple[float, str]:
        """(due time in Unix seconds, slot) of a delayed key."""
        due, slot = key.decode()[len(self.delayed) :].split("/", 1)
        return int(due) / 1000, slot


@dataclass(frozen=True)
class Envelope:
    """What an item key holds: the payload (bytes, str or a JSON value, returned as it was put) and its history."""

    kind: str  # "b" bytes (base64 in JSON), "s" str, "j" any JSON value
    data: Any
    priority: int
    enqueued_at: float
    deliveries: int = 0
    not_before: float = 0.0
    error: str | None = None

    @classmethod
    def new(cls, item: object, priority: int, not_before: float = 0.0) -> Envelope:
        """Raises TypeError when ``item`` is not bytes, str or JSON-serialisable."""
        _check_priority(priority)
        if isinstance(item, bytes | bytearray | memoryview):
            return cls("b", base64.b64encode(bytes(item)).decode(), priority, time.time(), not_before=not_before)
        if isinstance(item, str):
            return cls("s", item, priority, time.time(), not_before=not_before)
        try:
            json.dumps(item)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"a queue item must be bytes, str or JSON-serialisable: {exc}") from None
        return cls("j", item, priority, time.time(), not_before=not_before)

    @property
    def value(self) -> Any:
        """The payload as it was put."""
        return base64.b64decode(self.data) if self.kind == "b" else self.data

    def encode(self) -> bytes:
        fields: dict[str, Any] = {
            "v": 1,
            "kind": self.kind,
            "data": self.data,
            "priority": self.priority,
            "enqueued_at": self.enqueued_at,
            "deliveries": self.deliveries,
        }
        if self.not_before:
            fields["not_before"] = self.not_before
        if self.error is not None:
            fields["error"] = self.error
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes, slot: str) -> Envelope:
        """The envelope in ``raw``; a value not written by this recipe (e.g. by etcdctl) becomes a bytes payload."""
        try:
            fields = json.loads(raw)
            if isinstance(fields, dict) and fields.get("v") == 1 and fields.get("kind") in ("b", "s", "j"):
                return cls(
                    fields["kind"],
                    fields["data"],
                    int(fields.get("priority", QueueKeys.priority_of(slot))),
                    float(fields.get("enqueued_at", 0.0)),
                    int(fields.get("deliveries", 0)),
                    float(fields.get("not_before", 0.0)),
                    fields.get("error"),
                )
        except (ValueError, TypeError, KeyError):
            pass
        return cls("b", base64.b64encode(raw).decode(), QueueKeys.priority_of(slot), 0.0)

    def delivered(self) -> Envelope:
        return replace(self, deliveries=self.deliveries + 1)

    def failed(self, error: str | None) -> Envelope:
        return replace(self, error=error if error is not None else self.error)
