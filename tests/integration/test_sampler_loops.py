"""The sampler (booking_sessions/observe/sampler.py) asks the broker and the database in loops of their own: a broker
that does not answer the lag sample (it may wait ``timeout_s``) leaves the database's answer fresh, so /readyz blames
the broker, not the database, and the other way round."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiokafka import TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from booking_sessions.observe.metrics import Metrics
from booking_sessions.observe.sampler import Sampler
from tests.waiting import eventually


class SilentBroker:
    """A consumer whose broker never answers: every offset request waits for ever."""

    def __init__(self) -> None:
        self.asked = 0

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("booking.events", 0)}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class SilentDatabase:
    """An engine whose database never answers."""

    def connect(self) -> contextlib.AbstractAsyncContextManager[None]:
        @contextlib.asynccontextmanager
        async def never() -> AsyncIterator[None]:
            await asyncio.Event().wait()
            yield

        return never()


async def test_a_silent_broker_leaves_the_database_sampled(engine: AsyncEngine) -> None:
    metrics = Metrics()
    broker = SilentBroker()
    sampler = Sampler(broker, engine, metrics, interval_s=0.05, timeout_s=60)
    stop = asyncio.Event()
    running = asyncio.create_task(sampler.run(stop))
    try:
        answers: list[float] = []

        async def database_sampled_again_and_again() -> bool:
            if metrics.database_ok_at is not None and metrics.database_ok_at not in answers:
                answers.append(metrics.database_ok_at)
            return len(answers) >= 5

        await eventually(database_sampled_again_and_again, what="five outbox samples", timeout_s=10, interval_s=0.02)
        assert broker.asked == 1, "the lag sample is still waiting for its one answer"
        assert metrics.kafka_ok_at is None and metrics.database_error is None
    finally:
        stop.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_silent_database_leaves_the_broker_sampled() -> None:
    metrics = Metrics()

    class AnsweringBroker(SilentBroker):
        async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
            self.asked += 1
            return dict.fromkeys(partitions, 7)

        async def committed(self, tp: TopicPartition) -> int:
            return 5

    broker = AnsweringBroker()
    sampler = Sampler(broker, SilentDatabase(), metrics, interval_s=0.05, timeout_s=60)  # type: ignore[arg-type]
    stop = asyncio.Event()
    running = asyncio.create_task(sampler.run(stop))
    try:

        async def broker_sampled_again_and_again() -> bool:
            return broker.asked >= 5

        await eventually(broker_sampled_again_and_again, what="five lag samples", timeout_s=10, interval_s=0.02)
        assert metrics.lag_total == 2
        assert metrics.database_ok_at is None
    finally:
        stop.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_newer_meeting_key_on_record_marks_this_instance_superseded_and_logs_it_once(
    engine: AsyncEngine,
) -> None:
    # A newcomer's find: an instance running under key version 1 when `meeting rekey` recorded version 2 went on
    # making version 1 rooms, and nothing said so until a restart.
    metrics = Metrics()
    sampler = Sampler(SilentBroker(), engine, metrics, interval_s=0.05, key_version=1)

    def superseded() -> float | None:
        return metrics.registry.get_sample_value("booking_sessions_meeting_key_superseded")

    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO meeting_keys (version, fingerprint) VALUES (1, '0123456789abcdef')"))
    with capture_logs() as logs:
        await sampler.sample_outbox()
        assert superseded() == 0
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO meeting_keys (version, fingerprint) VALUES (2, 'fedcba9876543210')"))
        await sampler.sample_outbox()
        await sampler.sample_outbox()

    assert superseded() == 1
    errors = [entry for entry in logs if entry["event"] == "meeting_key_superseded"]
    assert [(e["log_level"], e["key_version"], e["newest_on_record"]) for e in errors] == [("error", 1, 2)]


async def test_samples_that_time_out_count_as_retries_so_a_silent_server_pages() -> None:
    # A newcomer's find: with the broker frozen for hours, the lag gauge kept its last value (0) and nothing counted,
    # so no alert could fire while no work waited. Each failed sample now counts (BookingSessionsRetrying).
    metrics = Metrics()
    sampler = Sampler(SilentBroker(), SilentDatabase(), metrics, interval_s=0.02, timeout_s=0.02)  # type: ignore[arg-type]
    stop = asyncio.Event()
    running = asyncio.create_task(sampler.run(stop))

    def retries(component: str) -> float:
        value = metrics.registry.get_sample_value(
            "booking_sessions_retries_total", {"component": component, "cause": "timeout"}
        )
        return value or 0.0

    try:

        async def both_counted() -> bool:
            return retries("lag_sampler") >= 3 and retries("outbox_sampler") >= 3

        await eventually(both_counted, what="three failed samples of each server", timeout_s=10, interval_s=0.02)
        assert metrics.kafka_error is not None and metrics.database_error is not None
    finally:
        stop.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
