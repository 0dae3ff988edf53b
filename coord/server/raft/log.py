"""The Raft log as the core sees it: durable entries behind ``Storage`` followed by unstable (not yet persisted)
entries, plus the commit and applied indexes.

Invariants: ``applied <= committed <= last_index()``; ``committed`` never decreases (Raft figure 2); a committed
entry is never truncated (Raft §5.4, Leader Completeness).
"""

from __future__ import annotations

from .storage import NO_LIMIT, Storage, limit_size
from .types import CompactedError, Entry, Snapshot, UnavailableError


class Unstable:
    """Entries (and possibly a snapshot) received but not yet written to stable storage.

    ``offset`` is the index of ``entries[0]``; ``entries`` may be empty.
    """

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        return self.snapshot.metadata.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        return self.snapshot.metadata.index if self.snapshot is not None else None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == index:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are now durable; forget them unless they were replaced since."""
        if self.maybe_term(index) == term and index >= self.offset:
            self.entries = self.entries[index + 1 - self.offset :]
            self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.metadata.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: list[Entry]) -> None:
        after = entries[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= self.offset:
            # Replaces everything unstable; durable entries from ``after`` on are replaced when this is persisted.
            self.offset = after
            self.entries = list(entries)
        else:
            self.entries = self.entries[: after - self.offset] + list(entries)


class RaftLog:
    """Read view over storage + unstable, with the commit and applied indexes."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # A restarted node knows at least everything in its snapshot is committed and applied.
        self.committed = first - 1
        self.applied = first - 1

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term of ``index``. Raises CompactedError / UnavailableError outside ``[first_index()-1, last_index()]``."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        if index > self.last_index():
            raise UnavailableError(f"index {index} > last index {self.last_index()}")
        if index < self.first_index() - 1:
            raise CompactedError(f"index {index} is compacted")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_zero(index) == term and (term != 0 or index == 0 or index == self.first_index() - 1)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate's log is at least as up-to-date as ours (Raft §5.4.1)."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def entries(self, lo: int, max_bytes: int = NO_LIMIT) -> list[Entry]:
        if lo > self.last_index():
            return []
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def slice(self, lo: int, hi: int, max_bytes: int = NO_LIMIT) -> list[Entry]:
        """Entries ``[lo, hi)`` from storage then unstable, limited to ``max_bytes`` (at least one entry)."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"index {lo} is compacted (first index {first})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice up to {hi - 1} > last index {self.last_index()}")
        result: list[Entry] = []
        if lo < self.unstable.offset:
            result = self.storage.entries(lo, min(hi, self.unstable.offset), max_bytes)
            if len(result) < min(hi, self.unstable.offset) - lo:
                return result  # byte limit reached inside storage
        if hi > self.unstable.offset:
            start = max(lo, self.unstable.offset) - self.unstable.offset
            result = result + self.unstable.entries[start : hi - self.unstable.offset]
        return limit_size(result, max_bytes)

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first entry whose term differs from ours, or of the first new entry; 0 if none."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index ``<= index`` whose term is ``<= term``, and that term (fast backtracking, §5.3)."""
        while index > 0:
            try:
                t = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def maybe_append(self, index: int, log_term: int, committed: int, entries: list[Entry]) -> int | None:
        """AppendEntries receiver rules 2-5 (Raft figure 2). Returns the last new index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise AssertionError(f"conflict at {conflict} <= committed {self.committed}: committed entry lost")
            self.append(entries[conflict - (index + 1) :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, entries: list[Entry]) -> int:
        if entries:
            if entries[0].index - 1 < self.committed:
                raise AssertionError(f"append after {entries[0].index - 1} would overwrite committed entries")
            self.unstable.truncate_and_append(entries)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} is past the last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Advance the commit index to ``index`` only if that entry is of the current ``term`` (Raft §5.4.2)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if index > self.committed or index < self.applied:
            raise AssertionError(f"applied {index} outside [{self.applied}, {self.committed}]")
        self.applied = index

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 > lo:
            return self.slice(lo, self.committed + 1)
        return []

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.metadata.index
        self.unstable.restore(snapshot)
