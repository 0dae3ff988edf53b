"""A linearizability checker for histories of single-key registers (write, read, compare-and-set).

Usage::

    ops = [
        Op.write(client=0, key="k", value="a", invoke_ns=0, complete_ns=10),
        Op.read(client=1, key="k", value="a", invoke_ns=20, complete_ns=30),
    ]
    report = check(ops)
    assert report.ok, report.describe()

The model. Each key is a register that starts absent (``None``). Operations:

- ``write(v)`` sets the value to ``v``;
- ``read() -> v`` returns the current value (``None``: the key is absent);
- ``cas(expected, new)`` sets the value to ``new`` if the current value equals ``expected`` (``expected=None``: the
  key is absent) and answers ``succeeded=True``; otherwise it changes nothing and answers ``succeeded=False``,
  optionally with the value it saw (``observed``; the etcd harness reads it in the Txn's failure branch, so a failed
  cas is as strong an observation as a read).

Every operation has a client, an invocation time and a completion time (``time.monotonic_ns`` taken just before the
request is sent and just after its answer arrived), and an outcome:

- ``OK``: the server answered with a result; the operation took effect at one instant between invocation and
  completion (its linearization point), with that result.
- ``FAILED``: the server answered that the operation did not happen (a refusal documented as "not applied"). It
  has no effect and is dropped. (A cas whose comparison failed is *not* FAILED: it happened and observed the value,
  so record it as ``OK`` with ``succeeded=False``, which the checker verifies.)
- ``INDETERMINATE``: no answer, or an answer that does not say (etcd's "request timed out", "leader changed", a
  deadline exceeded, UNAVAILABLE after the request may have been sent, a connection reset): the operation may never
  take effect, or take effect at any instant after its invocation, even long after the client gave up (the entry
  may sit in a Raft log and be committed by a later leader). It is modelled as completing at +infinity and need not
  be linearized at all. An indeterminate cas, if it takes effect, succeeded (a failed one has no effect). A read that
  failed in any way has no effect and is dropped.

Linearizability is checked per key independently: a history of registers is linearizable iff each key's
sub-history is (locality, Herlihy & Wing 1990; the P-compositionality of Horn & Kroening 2015).

The search is the Wing & Gong algorithm with Lowe's memoisation (as in Porcupine and Knossos's ``wgl``): operations
are a list of call and return entries in time order; the search linearizes, in turn, any operation whose call
precedes the first pending return and whose step is legal in the current state, backtracking when it meets a
return entry whose operation it could not linearize. A cache of (set of linearized operations, state) pairs visited
prunes repeated configurations. Ties in time count as concurrent (a call at the same instant as a return is sorted
first), so a tie never produces a false alarm.

Before searching, an indeterminate write or cas whose new value no other operation ever reads, expects or observes
is dropped: in any linearization that contains it, the next operation to take effect can only be a write (a read or
cas would have to see the value), so removing it leaves a linearization. This keeps the search from branching on
every timed-out write. It is only done when every failed cas carries its observed value (a failed cas without one
could be explained by the unobserved write).

The search is bounded (``max_states`` cached configurations, ``time_limit_s``); when a bound is hit the verdict is
``UNKNOWN``, never a guess.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "UNKNOWN",
    "KeyResult",
    "Op",
    "Outcome",
    "Report",
    "Value",
    "Verdict",
    "check",
    "check_key",
    "format_history",
    "minimise",
]

Value = str | None
"""A register value; ``None`` means the key is absent."""


class _Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN
"""``Op.observed`` when a failed cas did not report the value it saw."""


class Outcome(enum.Enum):
    """How an operation ended (see the module docstring for what each one means to the model)."""

    OK = "ok"
    FAILED = "failed"
    INDETERMINATE = "indeterminate"


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"


Kind = Literal["write", "read", "cas"]


@dataclass(frozen=True)
class Op:
    """One operation of a client on one key. Build with :meth:`write`, :meth:`read` or :meth:`cas`.

    ``value``: the value written (write), the new value (cas) or the value returned (an OK read).
    ``expected``: the cas's expected value. ``succeeded``: an OK cas's answer. ``observed``: the value a failed cas
    saw, or :data:`UNKNOWN`. ``complete_ns`` is None for an INDETERMINATE operation.
    """

    client: int
    key: Hashable
    kind: Kind
    invoke_ns: int
    complete_ns: int | None
    outcome: Outcome
    value: Value = None
    expected: Value = None
    succeeded: bool | None = None
    observed: Value | _Unknown = UNKNOWN

    def __post_init__(self) -> None:
        if self.outcome is Outcome.INDETERMINATE:
            if self.complete_ns is not None:
                raise ValueError("an indeterminate operation has no completion time (it completes at +infinity)")
        elif self.complete_ns is None:
            raise ValueError(f"an {self.outcome.value} operation needs a completion time")
        elif self.complete_ns < self.invoke_ns:
            raise ValueError(f"completion {self.complete_ns} precedes invocation {self.invoke_ns}")
        if self.kind == "cas" and self.outcome is Outcome.OK and self.succeeded is None:
            raise ValueError("an OK cas needs succeeded=True or False")
        if self.kind == "cas" and self.succeeded and self.observed is not UNKNOWN:
            raise ValueError("only a failed cas observes a value")

    @staticmethod
    def write(
        client: int, key: Hashable, value: str, invoke_ns: int, complete_ns: int | None, outcome: Outcome = Outcome.OK
    ) -> Op:
        return Op(client, key, "write", invoke_ns, complete_ns, outcome, value=value)

    @staticmethod
    def read(
        client: int, key: Hashable, value: Value, invoke_ns: int, complete_ns: int | None, outcome: Outcome = Outcome.OK
    ) -> Op:
        return Op(client, key, "read", invoke_ns, complete_ns, outcome, value=value)

    @staticmethod
    def cas(
        client: int,
        key: Hashable,
        expected: Value,
        new: str,
        invoke_ns: int,
        complete_ns: int | None,
        outcome: Outcome = Outcome.OK,
        *,
        succeeded: bool | None = None,
        observed: Value | _Unknown = UNKNOWN,
    ) -> Op:
        return Op(
            client, key, "cas", invoke_ns, complete_ns, outcome, value=new, expected=expected, succeeded=succeeded,
            observed=observed,
        )  # fmt: skip

    def references(self) -> list[Value]:
        """The values this operation reads, expects or observes (the values it depends on having been written)."""
        if self.kind == "read":
            return [self.value]
        if self.kind == "cas":
            seen = [self.expected]
            if self.observed is not UNKNOWN:
                seen.append(self.observed)
            return seen
        return []

    def step(self, state: Value) -> tuple[bool, Value]:
        """Whether this operation may take effect in ``state`` with the result it had, and the state after it."""
        if self.kind == "write":
            return True, self.value
        if self.kind == "read":
            return state == self.value, state
        if self.outcome is Outcome.INDETERMINATE or self.succeeded:
            return (True, self.value) if state == self.expected else (False, state)
        if state == self.expected:
            return False, state
        return (self.observed is UNKNOWN or state == self.observed), state

    def call_text(self) -> str:
        if self.kind == "write":
            return f"write({self.value!r})"
        if self.kind == "read":
            return "read()"
        return f"cas({self.expected!r} -> {self.value!r})"

    def result_text(self) -> str:
        if self.outcome is Outcome.INDETERMINATE:
            return "indeterminate"
        if self.outcome is Outcome.FAILED:
            return "failed"
        if self.kind == "read":
            return repr(self.value)
        if self.kind == "cas" and not self.succeeded:
            return f"compare failed (saw {self.observed.value if self.observed is UNKNOWN else repr(self.observed)})"
        return "ok"

    def describe(self) -> str:
        end = "inf" if self.complete_ns is None else f"{self.complete_ns}"
        return f"client {self.client} [{self.invoke_ns}, {end}] {self.call_text()} -> {self.result_text()}"


@dataclass
class KeyResult:
    """The verdict for one key. On NOT_LINEARIZABLE, ``best`` is the longest linearization of a prefix found,
    ``stuck`` the operations that could have come next but none of which is legal after it (the first of them
    is the one whose completion forced the search back)."""

    key: Hashable
    verdict: Verdict
    ops: list[Op]
    states: int
    elapsed_s: float
    dropped: int = 0
    best: list[Op] = field(default_factory=list)
    stuck: list[Op] = field(default_factory=list)
    reason: str = ""

    def describe(self) -> str:
        head = (
            f"key {self.key!r}: {self.verdict.value} ({len(self.ops)} ops searched, {self.dropped} dropped, "
            f"{self.states} states, {self.elapsed_s:.3f}s)"
        )
        if self.verdict is Verdict.LINEARIZABLE:
            return head
        lines = [head]
        if self.reason:
            lines.append(f"  {self.reason}")
        if self.verdict is Verdict.NOT_LINEARIZABLE:
            state = _replay(self.best)
            lines.append(f"  longest linearizable prefix: {len(self.best)} ops, ending in state {state!r}; last ops:")
            lines += [f"    {op.describe()}" for op in self.best[-8:]]
            lines.append("  none of these can come next:")
            lines += [f"    {op.describe()}" for op in self.stuck]
        return "\n".join(lines)


@dataclass
class Report:
    """Verdicts for every key of a history. ``ok`` is true iff every key is LINEARIZABLE."""

    results: dict[Hashable, KeyResult]

    @property
    def ok(self) -> bool:
        return all(r.verdict is Verdict.LINEARIZABLE for r in self.results.values())

    @property
    def verdict(self) -> Verdict:
        verdicts = {r.verdict for r in self.results.values()}
        if Verdict.NOT_LINEARIZABLE in verdicts:
            return Verdict.NOT_LINEARIZABLE
        if Verdict.UNKNOWN in verdicts:
            return Verdict.UNKNOWN
        return Verdict.LINEARIZABLE

    def describe(self) -> str:
        return "\n".join(r.describe() for r in self.results.values())


def check(history: Iterable[Op], *, max_states: int = 2_000_000, time_limit_s: float = 30.0) -> Report:
    """Check every key's sub-history of ``history`` (each within the bounds given, see :func:`check_key`)."""
    by_key: dict[Hashable, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    return Report(
        {key: check_key(ops, max_states=max_states, time_limit_s=time_limit_s) for key, ops in by_key.items()}
    )


def _relevant(ops: Sequence[Op]) -> list[Op]:
    """The operations the search must consider: failed operations and failed reads have no effect; unobserved
    indeterminate writes and cas are dropped as the module docstring justifies."""
    kept = [op for op in ops if op.outcome is not Outcome.FAILED]
    kept = [op for op in kept if not (op.kind == "read" and op.outcome is not Outcome.OK)]
    blind_failed_cas = any(op.kind == "cas" and op.succeeded is False and op.observed is UNKNOWN for op in kept)
    if blind_failed_cas:
        return kept
    referenced = {value for op in kept for value in op.references()}
    return [op for op in kept if op.outcome is Outcome.OK or op.kind == "read" or op.value in referenced]


def check_key(ops: Sequence[Op], *, max_states: int = 2_000_000, time_limit_s: float = 30.0) -> KeyResult:
    """Decide whether one key's history is linearizable (every op must be on the same key).

    Bounded by ``max_states`` cached configurations and ``time_limit_s`` seconds: past either the verdict is
    UNKNOWN. Raises ValueError for operations on different keys.
    """
    started = time.monotonic()
    keys = {op.key for op in ops}
    if len(keys) > 1:
        raise ValueError(f"check_key got operations on several keys: {sorted(map(repr, keys))}")
    key = next(iter(keys)) if keys else None
    relevant = _relevant(ops)
    dropped = len(ops) - len(relevant)
    search = _Search(relevant, max_states, started + time_limit_s)
    verdict = search.run()
    result = KeyResult(key, verdict, relevant, len(search.cache), time.monotonic() - started, dropped)
    if verdict is Verdict.NOT_LINEARIZABLE:
        result.best = [relevant[i] for i in search.best]
        result.stuck = [relevant[i] for i in search.best_frontier]
        result.reason = "no linearization exists"
    elif verdict is Verdict.UNKNOWN:
        result.reason = f"search bound hit ({search.bound}); the history is too large or too concurrent to decide"
    return result


class _Search:
    """Wing & Gong / Lowe search over a doubly linked list of entries (see the module docstring).

    Entries are numbered 1..2n (0 is the head sentinel); entry ``e`` is op ``op_of[e]``, a call if ``is_call[e]``;
    a call's ``match`` is its return entry.
    """

    def __init__(self, ops: Sequence[Op], max_states: int, deadline: float) -> None:
        self.ops = ops
        self.max_states = max_states
        self.deadline = deadline
        self.cache: set[tuple[int, Value]] = set()
        self.bound = ""
        self.best: list[int] = []
        self.best_frontier: list[int] = []
        infinity = float("inf")
        events: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op index)
        for i, op in enumerate(ops):
            events.append((op.invoke_ns, 0, i))
            events.append((infinity if op.complete_ns is None else op.complete_ns, 1, i))
        events.sort()
        size = len(events) + 1
        self.op_of = [0] * size
        self.is_call = [False] * size
        self.match = [0] * size
        self.nxt = list(range(1, size + 1))
        self.prv = list(range(-1, size - 1))
        self.nxt[size - 1] = 0  # 0 doubles as the end marker: the head is never "next"
        call_entry: dict[int, int] = {}
        for e, (_, is_return, i) in enumerate(events, start=1):
            self.op_of[e] = i
            self.is_call[e] = not is_return
            if is_return:
                self.match[call_entry[i]] = e
            else:
                call_entry[i] = e
        self.required = sum(1 for op in ops if op.complete_ns is not None)

    def _lift(self, call: int) -> None:
        """Unlink a call entry and its return entry."""
        for e in (call, self.match[call]):
            self.nxt[self.prv[e]] = self.nxt[e]
            if self.nxt[e]:
                self.prv[self.nxt[e]] = self.prv[e]

    def _unlift(self, call: int) -> None:
        """Relink them (in the reverse order of unlinking)."""
        for e in (self.match[call], call):
            self.nxt[self.prv[e]] = e
            if self.nxt[e]:
                self.prv[self.nxt[e]] = e

    def run(self) -> Verdict:
        ops, op_of, is_call, nxt = self.ops, self.op_of, self.is_call, self.nxt
        state: Value = None
        linearized = 0
        done_required = 0
        stack: list[tuple[int, Value]] = []  # (call entry, state before it)
        deepest = -1  # the depth of the deepest dead end met, for the diagnosis
        entry = nxt[0]
        steps = 0
        while done_required < self.required:
            steps += 1
            if steps & 0x3FF == 0 and time.monotonic() > self.deadline:
                self.bound = "time limit"
                return Verdict.UNKNOWN
            # An op with a finite return is not linearized yet, so its return entry lies ahead, before every
            # return at +infinity: the walk meets it before running off the list or reaching an infinite return.
            if entry == 0 or (ops[op_of[entry]].complete_ns is None and not is_call[entry]):
                raise RuntimeError("lincheck internal error: walked past a pending finite return")
            i = op_of[entry]
            if is_call[entry]:
                legal, after = ops[i].step(state)
                if legal:
                    candidate = (linearized | (1 << i), after)
                    if candidate not in self.cache:
                        if len(self.cache) >= self.max_states:
                            self.bound = f"{self.max_states} states"
                            return Verdict.UNKNOWN
                        self.cache.add(candidate)
                        stack.append((entry, state))
                        linearized, state = candidate
                        if ops[i].complete_ns is not None:
                            done_required += 1
                        self._lift(entry)
                        entry = nxt[0]
                        continue
                entry = nxt[entry]
                continue
            # A return entry whose operation is not linearized yet: this branch is dead.
            if len(stack) > deepest:
                deepest = len(stack)
                self.best = [op_of[e] for e, _ in stack]
                self.best_frontier = self._frontier(entry)
            if not stack:
                return Verdict.NOT_LINEARIZABLE
            entry, state = stack.pop()
            popped = op_of[entry]
            linearized &= ~(1 << popped)
            if ops[popped].complete_ns is not None:
                done_required -= 1
            self._unlift(entry)
            entry = nxt[entry]
        return Verdict.LINEARIZABLE

    def _frontier(self, return_entry: int) -> list[int]:
        """The op whose return is ``return_entry`` first, then every other op whose call precedes it."""
        stuck = [self.op_of[return_entry]]
        e = self.nxt[0]
        while e and e != return_entry:
            if self.is_call[e] and self.op_of[e] != stuck[0]:
                stuck.append(self.op_of[e])
            e = self.nxt[e]
        return stuck


def _replay(ops: Sequence[Op]) -> Value:
    state: Value = None
    for op in ops:
        _, state = op.step(state)
    return state


def _closed(ops: Sequence[Op]) -> bool:
    """Every value some op reads, expects or observes is absent or written by some op of ``ops``."""
    written = {op.value for op in ops if op.kind != "read"}
    return all(value is None or value in written for op in ops for value in op.references())


def minimise(
    ops: Sequence[Op], *, time_limit_s: float = 30.0, is_bad: Callable[[Sequence[Op]], bool] | None = None
) -> list[Op]:
    """A smaller sub-history of one key that is still NOT_LINEARIZABLE (delta debugging: drop blocks of operations,
    halving the block size down to single operations, within ``time_limit_s``).

    Only removals that keep the history closed are tried (every value read, expected or observed is still written
    by some remaining operation), so the result fails for the same kind of reason as the input, not merely because
    a write was removed. Returns ``ops`` unchanged if it is not NOT_LINEARIZABLE.
    """
    deadline = time.monotonic() + time_limit_s

    def bad(candidate: Sequence[Op]) -> bool:
        if is_bad is not None:
            return is_bad(candidate)
        budget = max(0.1, min(5.0, deadline - time.monotonic()))
        return check_key(candidate, max_states=200_000, time_limit_s=budget).verdict is Verdict.NOT_LINEARIZABLE

    current = list(ops)
    if not bad(current):
        return current
    block = max(1, len(current) // 2)
    while block >= 1 and time.monotonic() < deadline:
        start = 0
        while start < len(current) and time.monotonic() < deadline:
            candidate = current[:start] + current[start + block :]
            if candidate and _closed(candidate) and bad(candidate):
                current = candidate
            else:
                start += block
        if block == 1:
            break
        block //= 2
    return current


def format_history(ops: Sequence[Op]) -> str:
    """One line per operation, in invocation order, times relative to the first invocation (in ms)."""
    if not ops:
        return "(empty history)"
    origin = min(op.invoke_ns for op in ops)
    lines = []
    for op in sorted(ops, key=lambda o: o.invoke_ns):
        end = "inf" if op.complete_ns is None else f"{(op.complete_ns - origin) / 1e6:.3f}"
        start = (op.invoke_ns - origin) / 1e6
        lines.append(f"{start:10.3f} .. {end:>10}  c{op.client:<3} {op.call_text()} -> {op.result_text()}")
    return "\n".join(lines)
