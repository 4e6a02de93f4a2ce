"""close_within: a Kafka client's close at the end of an operator's command never holds it and never puts a
traceback over its line (CONTRACT "it never hangs"); found by trying: `dlq list` behind a silenced broker printed
its one line, then a CancelledError traceback from the consumer's stop()."""

from __future__ import annotations

import asyncio
import time

import pytest

from booking_sessions.ops.failures import close_within


async def test_a_close_that_never_ends_is_abandoned_at_its_deadline() -> None:
    async def never() -> None:
        await asyncio.Event().wait()

    started = time.monotonic()
    await close_within(never(), "consumer", 0.2)
    assert 0.2 <= time.monotonic() - started < 2


async def test_a_close_that_raises_its_own_cancellation_or_an_error_is_logged_not_raised() -> None:
    async def cancelled_inside() -> None:
        raise asyncio.CancelledError

    async def failing() -> None:
        raise RuntimeError("connection reset")

    await close_within(cancelled_inside(), "consumer", 1.0)
    await close_within(failing(), "producer", 1.0)


async def test_cancelling_the_command_itself_still_cancels_it() -> None:
    entered = asyncio.Event()

    async def slow_close() -> None:
        entered.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(close_within(slow_close(), "consumer", 60.0))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
