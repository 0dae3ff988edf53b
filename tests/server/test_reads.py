"""ReadQueue: the stages of a batched ReadIndex read barrier, and its failures."""

from __future__ import annotations

import asyncio

import pytest

from coord.errors import LEADER_CHANGED, NO_LEADER, STOPPED
from coord.server.reads import ReadQueue
from coord.server.rejection import Rejected


def test_reads_are_batched_confirmed_and_released_by_applied_index() -> None:
    async def scenario() -> None:
        reads = ReadQueue()
        assert reads.take_pending() is None
        first, second = reads.add(), reads.add()
        ctx = reads.take_pending()
        assert ctx is not None and reads.take_pending() is None  # one batch for both
        late = reads.add()
        late_ctx = reads.take_pending()
        assert late_ctx not in (None, ctx)
        reads.confirmed(ctx, 10)
        reads.release(9)
        assert not first.done() and not second.done()
        reads.release(10)
        assert first.result() is None and second.result() is None
        assert not late.done()
        reads.confirmed(b"unknown", 1)  # an answer to nothing: ignored
        reads.confirmed(late_ctx, 11)
        reads.release(12)
        assert late.done()

    asyncio.run(scenario())


def test_refusal_leader_change_and_stop_fail_reads_with_retryable_errors() -> None:
    async def scenario() -> None:
        reads = ReadQueue()
        refused = reads.add()
        ctx = reads.take_pending()
        assert ctx is not None
        reads.refuse(ctx, Rejected(NO_LEADER))
        with pytest.raises(Rejected) as err:
            await refused
        assert err.value.spec is NO_LEADER

        lost = reads.add()
        assert reads.take_pending() is not None
        reads.leader_changed()
        with pytest.raises(Rejected) as err:
            await lost
        assert err.value.spec is LEADER_CHANGED

        waiting = reads.add()
        waiting_ctx = reads.take_pending()
        assert waiting_ctx is not None
        reads.confirmed(waiting_ctx, 5)  # confirmed, index not applied yet
        in_flight = reads.add()
        assert reads.take_pending() is not None
        pending = reads.add()
        reads.fail_all(STOPPED)
        for future in (pending, in_flight, waiting):
            with pytest.raises(Rejected) as err:
                await future
            assert err.value.spec is STOPPED

    asyncio.run(scenario())


def test_request_contexts_do_not_repeat_across_restarts() -> None:
    """A fresh queue (a restarted member) does not reuse the contexts of an earlier one, so a ReadIndex answer meant
    for the old process cannot confirm a new batch."""

    async def first_contexts() -> list[bytes]:
        reads = ReadQueue()
        contexts = []
        for _ in range(3):
            reads.add()
            ctx = reads.take_pending()
            assert ctx is not None
            contexts.append(ctx)
        return contexts

    before, after = asyncio.run(first_contexts()), asyncio.run(first_contexts())
    assert len(set(before)) == 3
    assert not set(before) & set(after)
