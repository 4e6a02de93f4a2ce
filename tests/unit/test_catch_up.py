"""A batch takes ``BOOKING_MAX_BATCH_RECORDS`` while the consumer keeps up, ``BOOKING_CATCH_UP_BATCH_RECORDS`` while
at least that many records wait (consumer/catch_up.py, consumer/loop.py): a backlog drains in fewer, larger
batches; a live stream's records never wait for a large batch."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from pydantic import ValidationError

from booking_sessions.settings import Settings
from consumer.catch_up import batch_limit, records_waiting
from consumer.loop import ConsumerLoop
from consumer.results import BatchResult, committed_fields
from tests.unit.memory_consumer import TOPIC, Event, MemoryConsumer, MemoryProcessor

P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)
P2 = TopicPartition(TOPIC, 2)


def test_records_waiting_counts_each_partition_from_its_position_to_its_high_watermark() -> None:
    ends = {P0: 100, P1: 7, P2: 50}
    assert records_waiting({P0: 40, P1: 7, P2: 0}, ends) == 110
    assert records_waiting({P0: 40}, ends) == 60  # no position known for P1, P2: not counted
    assert records_waiting({P0: 40, P1: 0}, {P0: 100}) == 60  # no high watermark for P1 yet: not counted
    assert records_waiting({P0: 120}, ends) == 0  # a high watermark behind (a stale one): never negative
    assert records_waiting({}, ends) == 0
    # A bounded run (replay): what lies at or past a partition's stop offset is not to be applied, so not waiting.
    assert records_waiting({P0: 40, P1: 0}, ends, {P0: 45}) == 5 + 7
    assert records_waiting({P0: 40}, ends, {P0: 30}) == 0


def test_batch_limit_is_the_catch_up_size_only_once_that_many_wait() -> None:
    assert batch_limit(0, 2000, 8000) == 2000
    assert batch_limit(7999, 2000, 8000) == 2000
    assert batch_limit(8000, 2000, 8000) == 8000
    assert batch_limit(10**6, 2000, 8000) == 8000
    # A catch-up size at or below the batch size turns catching up off: never fewer than the batch size.
    assert batch_limit(10**6, 2000, 2000) == 2000
    assert batch_limit(10**6, 2000, 500) == 2000


async def batch_sizes(loop: ConsumerLoop) -> list[int]:
    sizes = []
    while (result := await loop.run_once()) is not None:
        sizes.append(result.records)
    return sizes


async def test_a_backlog_is_taken_in_catch_up_batches_and_its_tail_in_batches_of_the_batch_size() -> None:
    timeline: list[Event] = []
    consumer = MemoryConsumer({P0: [f"k{i}" for i in range(100)]}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=4, catch_up_records=10, fetch_timeout_ms=5)  # type: ignore[arg-type]

    sizes = await batch_sizes(loop)

    # The first fetch knows no lag yet: the batch size. Then 96 wait: catch-up batches while 10 or more do.
    assert sizes == [4, *[10] * 9, 4, 2], sizes
    assert [offset for kind, _, offset in timeline if kind == "apply"] == list(range(100)), "each record once, in order"


async def test_each_batch_reports_the_records_waiting_behind_its_fetch_for_its_log_line() -> None:
    timeline: list[Event] = []
    consumer = MemoryConsumer({P0: [f"k{i}" for i in range(30)]}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=4, catch_up_records=10, fetch_timeout_ms=5)  # type: ignore[arg-type]
    results: list[BatchResult] = []
    while (result := await loop.run_once()) is not None:
        results.append(result)

    assert [(r.records, r.waiting) for r in results] == [(4, 26), (10, 16), (10, 6), (4, 2), (2, 0)]
    fields = committed_fields(results[1], commit_s=0.001)
    assert fields["records"] == 10 and fields["records_waiting"] == 16


async def test_with_catch_up_batches_off_the_lag_is_not_read_nor_logged() -> None:
    timeline: list[Event] = []
    consumer = MemoryConsumer({P0: [f"k{i}" for i in range(6)]}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=4, catch_up_records=0, fetch_timeout_ms=5)  # type: ignore[arg-type]
    result = await loop.run_once()

    assert result is not None and result.waiting is None
    assert "records_waiting" not in committed_fields(result, commit_s=0.001)


async def test_a_burst_smaller_than_a_catch_up_batch_is_taken_in_batches_of_the_batch_size() -> None:
    timeline: list[Event] = []
    consumer = MemoryConsumer({P0: [], P1: []}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=4, catch_up_records=10, fetch_timeout_ms=5)  # type: ignore[arg-type]
    sizes = []
    for step in range(10):  # a live stream's bursts: 9 records at once, fewer than a catch-up batch
        for tp, n in ((P0, 4), (P1, 5)):
            consumer.logs[tp] += [f"{tp.partition}-{step}-{i}" for i in range(n)]
        while (result := await loop.run_once()) is not None:
            sizes.append(result.records)
    assert sizes == [4, 4, 1] * 10, sizes


async def test_records_waiting_on_any_partition_count_and_a_paused_one_does_not() -> None:
    timeline: list[Event] = []
    consumer = MemoryConsumer({P0: [f"a{i}" for i in range(3)], P1: [f"b{i}" for i in range(40)]}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=4, catch_up_records=10, fetch_timeout_ms=5)  # type: ignore[arg-type]
    first = await loop.run_once()  # 3 from P0, 1 from P1: 39 wait on P1, which the batch hardly touched
    assert first is not None and first.records == 4
    assert loop.batch_limit == 10
    consumer.pause(P1)  # held (a parked booking): what waits there is not read, so it is no backlog to take
    consumer.logs[P0] += ["a3"]
    assert (await loop.run_once()) is not None
    assert loop.batch_limit == 4


@pytest.mark.parametrize("catch_up", [None, 0, 3, 4])
async def test_without_a_catch_up_size_above_the_batch_size_the_batch_size_bounds_every_batch(
    catch_up: int | None,
) -> None:
    timeline: list[Event] = []
    consumer = MemoryConsumer({P0: [f"k{i}" for i in range(30)]}, timeline)
    processor = MemoryProcessor(timeline)
    loop = ConsumerLoop(consumer, processor, max_records=4, catch_up_records=catch_up, fetch_timeout_ms=5)  # type: ignore[arg-type]
    assert await batch_sizes(loop) == [4] * 7 + [2]


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("8000", 8000), ("1000000", 1_000_000)])
def test_the_setting_takes_0_for_off_and_sizes_up_to_a_million(
    monkeypatch: pytest.MonkeyPatch, text: str, value: int
) -> None:
    monkeypatch.setenv("BOOKING_CATCH_UP_BATCH_RECORDS", text)
    assert Settings().catch_up_batch_records == value


@pytest.mark.parametrize("text", ["-1", "1000001", "8k", "lots"])
def test_a_negative_too_large_or_unreadable_setting_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("BOOKING_CATCH_UP_BATCH_RECORDS", text)
    with pytest.raises(ValidationError, match="catch_up_batch_records"):
        Settings()


class RebalancedConsumer(MemoryConsumer):
    """A partition taken by a rebalance while the loop reads the positions: ``position`` raises, as aiokafka's does."""

    async def position(self, tp: TopicPartition) -> int:
        raise IllegalStateError(f"Partition {tp} is not assigned")


async def test_positions_that_cannot_be_read_mean_no_known_lag_not_a_failed_batch() -> None:
    timeline: list[Event] = []
    consumer = RebalancedConsumer({P0: [f"k{i}" for i in range(30)]}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=4, catch_up_records=10, fetch_timeout_ms=5)  # type: ignore[arg-type]
    assert await batch_sizes(loop) == [4] * 7 + [2]


class AskingConsumer(MemoryConsumer):
    """Notes how many records each getmany asked for."""

    def __init__(self, logs: dict[TopicPartition, list[str]], timeline: list[Event]) -> None:
        super().__init__(logs, timeline)
        self.asked: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int = 1000) -> dict[TopicPartition, list[Any]]:
        self.asked.append(max_records)
        return await super().getmany(timeout_ms=timeout_ms, max_records=max_records)


async def test_a_bounded_run_counts_only_what_waits_before_its_stop_offsets() -> None:
    timeline: list[Event] = []
    consumer = AskingConsumer({P0: [f"k{i}" for i in range(100)]}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=4, catch_up_records=10, fetch_timeout_ms=5)  # type: ignore[arg-type]

    total = await loop.run_to({P0: 12})

    assert total.records == 12
    # 96 records wait on the broker, but 8 before the stop: never a catch-up batch, whose tail would be dropped.
    assert consumer.asked == [4, 4, 4], consumer.asked
    assert [offset for kind, _, offset in timeline if kind == "apply"] == list(range(12))
