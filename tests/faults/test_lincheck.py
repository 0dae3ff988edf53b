"""The register linearizability checker (tests/faults/lincheck.py) on hand-written histories, on histories generated
from an atomic register, and against a brute-force oracle on small random histories. No servers.

Times are small integers (the checker only compares them); ``None`` as a completion time means indeterminate.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from tests.faults.lincheck import UNKNOWN, Op, Outcome, Verdict, check, check_key, format_history, minimise

OK, FAILED, INDET = Outcome.OK, Outcome.FAILED, Outcome.INDETERMINATE


def w(client: int, value: str, start: int, end: int | None, key: str = "k") -> Op:
    return Op.write(client, key, value, start, end, OK if end is not None else INDET)


def r(client: int, value: str | None, start: int, end: int, key: str = "k") -> Op:
    return Op.read(client, key, value, start, end)


def cas_ok(client: int, expected: str | None, new: str, start: int, end: int) -> Op:
    return Op.cas(client, "k", expected, new, start, end, succeeded=True)


def cas_failed(client: int, expected: str | None, new: str, start: int, end: int, saw: object = UNKNOWN) -> Op:
    return Op.cas(client, "k", expected, new, start, end, succeeded=False, observed=saw)  # type: ignore[arg-type]


def cas_indet(client: int, expected: str | None, new: str, start: int) -> Op:
    return Op.cas(client, "k", expected, new, start, None, INDET)


def verdict(ops: Sequence[Op]) -> Verdict:
    return check_key(ops, time_limit_s=10).verdict


LIN, NOT = Verdict.LINEARIZABLE, Verdict.NOT_LINEARIZABLE


# -- reads and writes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ops", "expected"),
    [
        ("empty", [], LIN),
        ("read of the initial absent value", [r(0, None, 0, 1)], LIN),
        ("sequential write then read", [w(0, "a", 0, 10), r(1, "a", 20, 30)], LIN),
        ("read of a value never written", [w(0, "a", 0, 10), r(1, "b", 20, 30)], NOT),
        ("read of absent after a completed write", [w(0, "a", 0, 10), r(1, None, 20, 30)], NOT),
        ("stale read after a completed write", [w(0, "a", 0, 10), w(0, "b", 20, 30), r(1, "a", 40, 50)], NOT),
        ("concurrent read sees the old value", [w(0, "a", 0, 10), w(0, "b", 20, 40), r(1, "a", 25, 30)], LIN),
        ("concurrent read sees the new value", [w(0, "a", 0, 10), w(0, "b", 20, 40), r(1, "b", 25, 30)], LIN),
        ("read completing before the write is invoked", [r(1, "a", 0, 5), w(0, "a", 10, 20)], NOT),
        ("tie between a return and a call counts as concurrent", [r(1, "a", 0, 10), w(0, "a", 10, 20)], LIN),
        (
            "two reads see a value go back",
            [w(0, "a", 0, 10), w(0, "b", 20, 100), r(1, "b", 30, 40), r(2, "a", 50, 60)],
            NOT,
        ),
        (
            "two concurrent reads may disagree in either order",
            [w(0, "a", 0, 10), w(0, "b", 20, 100), r(1, "b", 30, 60), r(2, "a", 50, 70)],
            LIN,
        ),
        (
            "concurrent writes, readers agree on the last",
            [w(0, "a", 0, 50), w(1, "b", 0, 50), r(2, "a", 60, 70), r(3, "a", 80, 90)],
            LIN,
        ),
        (
            "concurrent writes, readers disagree on the last",
            [w(0, "a", 0, 50), w(1, "b", 0, 50), r(2, "a", 60, 70), r(3, "b", 80, 90)],
            NOT,
        ),
        (
            "a value read must be written once to be seen twice around another",
            [w(0, "a", 0, 100), w(1, "b", 0, 100), r(2, "a", 10, 20), r(3, "b", 30, 40), r(2, "a", 50, 60)],
            NOT,
        ),
    ],
)
def test_reads_and_writes(name: str, ops: list[Op], expected: Verdict) -> None:
    assert verdict(ops) is expected, name


# -- compare-and-set --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ops", "expected"),
    [
        ("cas from the current value", [w(0, "a", 0, 10), cas_ok(1, "a", "b", 20, 30), r(2, "b", 40, 50)], LIN),
        ("cas from absent on a fresh key", [cas_ok(1, None, "b", 0, 10), r(2, "b", 20, 30)], LIN),
        ("cas succeeding from a value never written", [w(0, "a", 0, 10), cas_ok(1, "x", "b", 20, 30)], NOT),
        (
            "cas succeeding from a value overwritten before it was invoked",
            [w(0, "a", 0, 10), w(0, "b", 20, 30), cas_ok(1, "a", "c", 40, 50)],
            NOT,
        ),
        (
            "cas succeeding from a value overwritten concurrently",
            [w(0, "a", 0, 10), w(0, "b", 20, 50), cas_ok(1, "a", "c", 30, 40), r(2, "b", 60, 70)],
            LIN,
        ),
        ("two cas from the same value both succeed", [w(0, "a", 0, 10), cas_ok(1, "a", "b", 20, 30),
                                                      cas_ok(2, "a", "c", 20, 30)], NOT),
        ("cas failing while the expected value is current", [w(0, "a", 0, 10), cas_failed(1, "a", "b", 20, 30)], NOT),
        ("cas failing, value differs", [w(0, "a", 0, 10), cas_failed(1, "x", "b", 20, 30)], LIN),
        ("failed cas observing the current value", [w(0, "a", 0, 10), cas_failed(1, "x", "b", 20, 30, "a")], LIN),
        ("failed cas observing a stale value", [w(0, "a", 0, 10), w(0, "c", 15, 18),
                                                cas_failed(1, "x", "b", 20, 30, "a")], NOT),
        ("failed cas observing absent on a fresh key", [cas_failed(1, "x", "b", 0, 10, None)], LIN),
        ("failed cas's new value is never written", [cas_failed(1, "x", "b", 0, 10), r(2, "b", 20, 30)], NOT),
    ],
)  # fmt: skip
def test_compare_and_set(name: str, ops: list[Op], expected: Verdict) -> None:
    assert verdict(ops) is expected, name


# -- indeterminate and failed operations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ops", "expected"),
    [
        ("indeterminate write never seen", [w(0, "a", 0, 10), w(1, "b", 20, None), r(2, "a", 30, 40)], LIN),
        ("indeterminate write seen much later", [w(1, "b", 0, None), r(2, "b", 10_000, 10_010)], LIN),
        ("indeterminate write seen before it was invoked", [r(2, "b", 0, 5), w(1, "b", 10, None)], NOT),
        (
            "indeterminate write seen, then the older value again",
            [w(0, "a", 0, 10), w(1, "b", 20, None), r(2, "b", 30, 40), r(3, "a", 50, 60)],
            NOT,
        ),
        (
            "indeterminate write taking effect after later reads of the old value",
            [w(0, "a", 0, 10), w(1, "b", 20, None), r(2, "a", 30, 40), r(3, "b", 50, 60)],
            LIN,
        ),
        (
            "indeterminate write applied after a later completed write",
            [w(1, "b", 0, None), w(0, "c", 10, 20), r(2, "b", 30, 40)],
            LIN,
        ),
        (
            "... but then the completed write cannot reappear",
            [w(1, "b", 0, None), w(0, "c", 10, 20), r(2, "b", 30, 40), r(2, "c", 50, 60)],
            NOT,
        ),
        ("a failed write never takes effect", [Op.write(0, "k", "a", 0, 10, FAILED), r(1, "a", 20, 30)], NOT),
        ("a failed write's absence", [Op.write(0, "k", "a", 0, 10, FAILED), r(1, None, 20, 30)], LIN),
        (
            "failed and indeterminate reads are dropped",
            [w(0, "a", 0, 10), Op.read(1, "k", "zzz", 20, None, INDET), Op.read(1, "k", "zzz", 20, 30, FAILED)],
            LIN,
        ),
        ("indeterminate cas from the current value seen", [w(0, "a", 0, 10), cas_indet(1, "a", "b", 20),
                                                           r(2, "b", 30, 40)], LIN),
        ("indeterminate cas from a stale value seen", [w(0, "a", 0, 10), w(0, "c", 12, 15),
                                                       cas_indet(1, "a", "b", 20), r(2, "b", 30, 40)], NOT),
        (
            # Only the unobserved indeterminate write explains the failed cas: it must not be pruned here.
            "unobserved indeterminate write explains a blind failed cas",
            [w(0, "a", 0, 10), w(1, "b", 20, None), cas_failed(2, "a", "x", 30, 40)],
            LIN,
        ),
        (
            "unobserved indeterminate write cannot explain a failed cas that saw the old value",
            [w(0, "a", 0, 10), w(1, "b", 20, None), cas_failed(2, "a", "x", 30, 40, "a")],
            NOT,
        ),
    ],
)  # fmt: skip
def test_indeterminate_and_failed(name: str, ops: list[Op], expected: Verdict) -> None:
    assert verdict(ops) is expected, name


# -- keys, bounds, diagnostics, input errors --------------------------------------------------------------------------


def test_keys_are_checked_independently() -> None:
    ops = [w(0, "a", 0, 10, key="x"), r(1, "a", 20, 30, key="x"), w(0, "a", 0, 10, key="y"), r(1, "b", 20, 30, key="y")]
    report = check(ops)
    assert not report.ok
    assert report.verdict is NOT
    assert report.results["x"].verdict is LIN
    assert report.results["y"].verdict is NOT


def test_a_search_bound_gives_unknown_not_a_guess() -> None:
    # Twelve concurrent writes and a read of the first: many orders to try before the stale read rules them out.
    ops = [w(c, f"v{c}", 0, 100) for c in range(12)] + [r(99, "v0", 200, 210), r(98, "v1", 300, 310)]
    result = check_key(ops, max_states=50)
    assert result.verdict is Verdict.UNKNOWN
    assert "50 states" in result.describe()
    assert check_key(ops).verdict is NOT


def test_diagnosis_names_the_stuck_operation() -> None:
    ops = [w(0, "a", 0, 10), w(0, "b", 20, 30), r(1, "a", 40, 50)]
    result = check_key(ops)
    text = result.describe()
    assert result.verdict is NOT
    assert result.stuck[0] == ops[2]
    assert "read() -> 'a'" in text and "ending in state 'b'" in text


def test_minimise_keeps_the_violation_and_its_writes() -> None:
    rng = random.Random(7)
    ops = _register_history(rng, clients=4, ops_per_client=30)
    victim = next(i for i, op in enumerate(ops) if op.kind == "read" and op.value is not None and op.invoke_ns > 500)
    stale = Op.read(ops[victim].client, "k", None, ops[victim].invoke_ns, ops[victim].complete_ns)
    bad = [*ops[:victim], stale, *ops[victim + 1 :]]
    assert verdict(bad) is NOT
    small = minimise(bad, time_limit_s=20)
    assert verdict(small) is NOT
    assert stale in small and len(small) < len(bad) // 4, format_history(small)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Op.write(0, "k", "a", 10, 5),
        lambda: Op.write(0, "k", "a", 10, 20, INDET),
        lambda: Op.write(0, "k", "a", 10, None, OK),
        lambda: Op.cas(0, "k", "a", "b", 0, 10),
        lambda: Op.cas(0, "k", "a", "b", 0, 10, succeeded=True, observed="a"),
    ],
)
def test_malformed_operations_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_check_key_refuses_several_keys() -> None:
    with pytest.raises(ValueError, match="several keys"):
        check_key([w(0, "a", 0, 1, key="x"), w(0, "a", 0, 1, key="y")])


# -- generated histories ----------------------------------------------------------------------------------------------


def _register_history(rng: random.Random, clients: int, ops_per_client: int, indeterminate: float = 0.05) -> list[Op]:
    """A history of an atomic register: each op takes effect at a random instant inside its interval (an
    indeterminate one at a random instant after its invocation, or never), so the history is linearizable."""
    pending: list[tuple[int, int, str, int, int]] = []  # (effect time, client, kind, start, end)
    for client in range(clients):
        now = rng.randrange(0, 20)
        for _ in range(ops_per_client):
            start, end = now, now + rng.randrange(1, 40)
            effect = rng.randrange(start, end + 1)
            pending.append((effect, client, rng.choice(["write", "read", "cas"]), start, end))
            now = end + rng.randrange(0, 10)
    pending.sort()
    state: str | None = None
    ops: list[Op] = []
    seq = itertools.count()
    recent: list[str | None] = [None]  # values the register held, for cas expectations that may be stale
    for _effect, client, kind, start, end in pending:
        lost = rng.random() < indeterminate
        if kind == "read":
            ops.append(Op.read(client, "k", state, start, end))
            continue
        new = f"c{client}-{next(seq)}"
        if lost and rng.random() < 0.5:
            # Never applied: an indeterminate op with no effect at all.
            ops.append(Op.write(client, "k", new, start, None, INDET))
            continue
        if kind == "write":
            state = new
            recent.append(state)
            ops.append(Op.write(client, "k", new, start, None if lost else end, INDET if lost else OK))
        else:
            expected = rng.choice([state, state, *recent[-3:]])
            ok = expected == state
            if ok:
                state = new
                recent.append(state)
            if lost and ok:
                ops.append(Op.cas(client, "k", expected, new, start, None, INDET))
            else:
                observed = UNKNOWN if ok else state
                ops.append(Op.cas(client, "k", expected, new, start, end, succeeded=ok, observed=observed))
    return ops


@pytest.mark.parametrize("seed", range(20))
def test_histories_of_an_atomic_register_are_accepted(seed: int) -> None:
    ops = _register_history(random.Random(seed), clients=6, ops_per_client=60)
    result = check_key(ops, time_limit_s=20)
    assert result.verdict is LIN, result.describe()


def test_a_large_history_is_decided_quickly() -> None:
    """Workload sizing for the fault tests: 8 clients x 150 ops on one key decides well inside the bounds."""
    ops = _register_history(random.Random(99), clients=8, ops_per_client=150, indeterminate=0.1)
    result = check_key(ops, max_states=500_000, time_limit_s=20)
    assert result.verdict is LIN, result.describe()


def _oracle(ops: Sequence[Op]) -> bool:
    """Brute force: try every order (and every subset of indeterminate ops) that respects real time."""
    live = [op for op in ops if op.outcome is not FAILED and not (op.kind == "read" and op.outcome is not OK)]
    inf = float("inf")

    def end(op: Op) -> float:
        return inf if op.complete_ns is None else op.complete_ns

    def search(placed: frozenset[int], state: str | None) -> bool:
        if all(i in placed or live[i].complete_ns is None for i in range(len(live))):
            return True
        for i, op in enumerate(live):
            if i in placed:
                continue
            if any(j not in placed and end(live[j]) < op.invoke_ns for j in range(len(live))):
                continue
            legal, after = op.step(state)
            if legal and search(placed | {i}, after):
                return True
        return False

    return search(frozenset(), None)


def _random_small_history(rng: random.Random) -> list[Op]:
    ops: list[Op] = []
    values = ["a", "b", "c"]
    for client in range(rng.randrange(1, 7)):
        start = rng.randrange(0, 20)
        end: int | None = start + rng.randrange(0, 10)
        outcome = rng.choice([OK, OK, OK, INDET, FAILED])
        if outcome is INDET:
            end = None
        kind = rng.choice(["write", "read", "cas"])
        if kind == "write":
            ops.append(Op.write(client, "k", rng.choice(values), start, end, outcome))
        elif kind == "read":
            value = rng.choice([None, *values])
            ops.append(Op.read(client, "k", value, start, end, outcome))
        else:
            expected, new = rng.choice([None, *values]), rng.choice(values)
            if outcome is OK:
                succeeded = rng.random() < 0.5
                observed = UNKNOWN if succeeded or rng.random() < 0.5 else rng.choice([None, *values])
                ops.append(Op.cas(client, "k", expected, new, start, end, succeeded=succeeded, observed=observed))
            else:
                ops.append(Op.cas(client, "k", expected, new, start, end, outcome))
    return ops


def test_agrees_with_a_brute_force_oracle_on_small_random_histories() -> None:
    rng = random.Random(2024)
    seen = {True: 0, False: 0}
    for _ in range(3000):
        ops = _random_small_history(rng)
        expected = _oracle(ops)
        got = check_key(ops).verdict
        assert got is (LIN if expected else NOT), format_history(ops)
        seen[expected] += 1
    # Both verdicts are well represented, so the agreement means something.
    assert min(seen.values()) > 500, seen
