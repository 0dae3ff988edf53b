"""Key-range permissions: which keys a user may read or write, merged from all of the user's roles.

etcd grants a role permissions on a single key (empty ``range_end``), on ``[key, range_end)``, or on every key from
``key`` on (``range_end`` = ``"\\0"``). A request on one key needs that key to be covered; a request on a range needs
the whole range covered by the union of the user's permissions of the wanted type (READWRITE counts as both).

Interval ends follow etcd's "affine" byte order: an empty end means +infinity (so an open-ended range reaches past
every key), and a single key ``k`` is the interval ``[k, k + "\\0")``. The functions below reproduce etcd 3.4's
results, including its corner cases, so the same grants allow the same requests on coord-server and on etcd.

:class:`PermissionCache` memoises merged permissions by the exact stored records they were built from, so a cached
entry can never be stale: any change to the user or to one of its roles changes the key.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from coord._proto.authpb import auth_pb2

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE

_OPEN = b"\x00"  # a range_end meaning "every key from key on"


def _affine(end: bytes) -> tuple[bool, bytes]:
    """Sort key of an interval end: bytes order, with the empty end (+infinity) above everything."""
    return (len(end) == 0, end)


@dataclass(frozen=True, slots=True)
class Interval:
    """``[begin, end)`` in affine byte order (an empty ``end`` or ``begin`` means +infinity)."""

    begin: bytes
    end: bytes

    @classmethod
    def point(cls, key: bytes) -> Interval:
        return cls(key, key + b"\x00")

    @classmethod
    def of_request(cls, key: bytes, range_end: bytes) -> Interval:
        """The keys a request on ``key``/``range_end`` (range_end non-empty) touches."""
        return cls(key, b"" if range_end == _OPEN else range_end)

    def overlaps(self, other: Interval) -> bool:
        """etcd's interval comparison says 'equal', i.e. the two intervals overlap."""
        b1, e1, b2, e2 = _affine(self.begin), _affine(self.end), _affine(other.begin), _affine(other.end)
        left_of = b1 < b2 and e1 <= b2
        right_of = b1 >= e2
        return not left_of and not right_of


def permission_interval(perm: auth_pb2.Permission) -> Interval:
    """The keys one granted permission covers."""
    if not perm.range_end:
        return Interval.point(perm.key)
    return Interval.of_request(perm.key, perm.range_end)


class UnifiedPermissions:
    """The read and write intervals of one user, merged over all of its roles."""

    def __init__(self, read: list[Interval], write: list[Interval]) -> None:
        order = lambda ivl: (_affine(ivl.begin), _affine(ivl.end))  # noqa: E731
        self._read = sorted(read, key=order)
        self._write = sorted(write, key=order)

    @classmethod
    def from_roles(cls, roles: Iterable[auth_pb2.Role]) -> UnifiedPermissions:
        read: list[Interval] = []
        write: list[Interval] = []
        for role in roles:
            for perm in role.keyPermission:
                ivl = permission_interval(perm)
                if perm.permType in (READ, READWRITE):
                    read.append(ivl)
                if perm.permType in (WRITE, READWRITE):
                    write.append(ivl)
        return cls(read, write)

    def allows(self, key: bytes, range_end: bytes, write: bool) -> bool:
        """Whether the user may read (``write=False``) or write every key of the request's range."""
        intervals = self._write if write else self._read
        if not range_end:
            point = Interval.point(key)
            return any(point.overlaps(ivl) for ivl in intervals)
        return _covers(intervals, Interval.of_request(key, range_end))


def _covers(intervals: list[Interval], wanted: Interval) -> bool:
    """Whether the union of the (begin-sorted) ``intervals`` overlapping ``wanted`` covers it without a gap."""
    min_begin: tuple[bool, bytes] | None = None
    max_end: tuple[bool, bytes] = (False, b"")
    for ivl in intervals:
        if not wanted.overlaps(ivl):
            continue
        begin, end = _affine(ivl.begin), _affine(ivl.end)
        if min_begin is None:
            min_begin, max_end = begin, end
            continue
        if max_end < begin:
            return False  # a gap between two granted intervals
        max_end = max(max_end, end)
    return min_begin is not None and max_end >= _affine(wanted.end) and min_begin <= _affine(wanted.begin)


class PermissionCache:
    """Merged permissions keyed by the stored user and role records they come from (never stale; bounded).

    Safe to use from the apply thread and the event loop at once.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._entries: dict[tuple[bytes, ...], UnifiedPermissions] = {}
        self._lock = threading.Lock()

    def get(self, records: tuple[bytes, ...]) -> UnifiedPermissions | None:
        with self._lock:
            return self._entries.get(records)

    def put(self, records: tuple[bytes, ...], perms: UnifiedPermissions) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[records] = perms
