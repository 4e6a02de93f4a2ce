"""The one backoff policy (models/backoff.py): doubling from the first wait to the cap, jittered, transient only."""

from __future__ import annotations

import pytest

from models.backoff import backoff


class Waits:
    """Records the waits instead of sleeping: the policy, not the clock, is under test."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.retried: list[tuple[str, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.seconds.append(seconds)

    def on_retry(self, error: BaseException, wait_s: float) -> None:
        self.retried.append((type(error).__name__, wait_s))


async def test_transient_faults_are_retried_with_doubling_jittered_waits_up_to_the_cap() -> None:
    waits = Waits()
    calls = 0
    async for attempt in backoff(initial_s=0.1, max_s=1.0, sleep=waits.sleep, on_retry=waits.on_retry):
        with attempt:
            calls += 1
            if calls < 8:
                raise ConnectionError("database away")
    assert calls == 8
    steps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert len(waits.seconds) == len(steps)
    for waited, step in zip(waits.seconds, steps, strict=True):
        assert step / 2 <= waited <= step
    assert waits.retried == [("ConnectionError", s) for s in waits.seconds]


async def test_a_poison_error_is_raised_at_once_as_it_is() -> None:
    waits = Waits()
    with pytest.raises(ValueError, match="bad row"):
        async for attempt in backoff(initial_s=0.1, max_s=1.0, sleep=waits.sleep):
            with attempt:
                raise ValueError("bad row")
    assert waits.seconds == []


async def test_the_last_attempts_error_is_raised_not_a_retry_error() -> None:
    waits = Waits()
    with pytest.raises(TimeoutError, match="silent"):
        async for attempt in backoff(initial_s=0.1, max_s=1.0, sleep=waits.sleep, attempts=3):
            with attempt:
                raise TimeoutError("silent")
    assert len(waits.seconds) == 2


async def test_a_sleep_that_raises_ends_the_retrying() -> None:
    class Stopped(Exception):
        pass

    async def stopped(_: float) -> None:
        raise Stopped

    with pytest.raises(Stopped):
        async for attempt in backoff(initial_s=0.1, max_s=1.0, sleep=stopped):
            with attempt:
                raise ConnectionError("away")
