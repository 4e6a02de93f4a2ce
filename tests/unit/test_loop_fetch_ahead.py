"""``run`` fetches the next batch while the batch in hand waits for PostgreSQL, but only once that batch's
transactions have sent their first statements (``BatchProcessor.apply``'s ``sent``), and in slices of
``FETCH_SLICE`` records with a yield between them (consumer/loop.py): the fetch's CPU never holds back a statement
of the batch in hand for long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from consumer.loop import FETCH_SLICE, ConsumerLoop
from consumer.results import BatchResult, Prepared
from tests.unit.memory_consumer import TOPIC, Event, MemoryConsumer, MemoryProcessor
from tests.waiting import eventually

P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)
Fetch = tuple[int, int, int]  # (timeout_ms, max_records, records returned)


class RecordingConsumer(MemoryConsumer):
    """Notes every getmany on the timeline (as ("fetch", records, 0)) and in ``fetches``."""

    def __init__(self, logs: dict[TopicPartition, list[str]], timeline: list[Event]) -> None:
        super().__init__(logs, timeline)
        self.fetches: list[Fetch] = []

    async def getmany(
        self, *, timeout_ms: int, max_records: int = 1000
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        out = await super().getmany(timeout_ms=timeout_ms, max_records=max_records)
        got = sum(len(records) for records in out.values())
        self.fetches.append((timeout_ms, max_records, got))
        if got:
            self.timeline.append(("fetch", got, 0))
        return out


class TellingProcessor(MemoryProcessor):
    """Notes on the timeline when it tells the loop its statements are out (("sent", first offset, 0)), or
    never tells it (``tells=False``: a processor that does not know)."""

    def __init__(self, timeline: list[Event], *, tells: bool = True) -> None:
        super().__init__(timeline)
        self.tells = tells

    async def apply(self, batch: Prepared, sent: Callable[[], None] | None = None) -> BatchResult:
        await asyncio.sleep(0.002)  # building the first statement
        if self.tells and sent is not None:
            self.timeline.append(("sent", batch.records[0].offset, 0))
            sent()
        await asyncio.sleep(0.005)  # the wait for PostgreSQL, during which the next batch is fetched
        return await super().apply(batch)


async def run_until_applied(loop: ConsumerLoop, timeline: list[Event], records: int) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:

        async def all_applied() -> bool:
            return sum(1 for kind, _, _ in timeline if kind == "apply") >= records

        await eventually(all_applied, what=f"{records} records applied", timeout_s=5)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)


async def test_the_next_batch_is_fetched_after_the_batch_in_hand_sent_its_statements_and_before_it_ends() -> None:
    timeline: list[Event] = []
    consumer = RecordingConsumer({P0: [f"k{i}" for i in range(12)]}, timeline)
    loop = ConsumerLoop(consumer, TellingProcessor(timeline), max_records=4, fetch_timeout_ms=20)  # type: ignore[arg-type]
    await run_until_applied(loop, timeline, 12)

    kinds = [(kind, a) for kind, a, _ in timeline if kind in ("fetch", "sent", "apply")]
    # First batch: fetched, sent; the second is fetched after that and before the first batch's records apply.
    assert kinds[:3] == [("fetch", 4), ("sent", 0), ("fetch", 4)], kinds
    applied = [offset for kind, _, offset in timeline if kind == "apply"]
    assert applied == list(range(12)), "every record once, in order"
    for first in (4, 8):  # each later batch: fetched between the previous batch's "sent" and its applies
        fetched_at = [i for i, e in enumerate(timeline) if e[0] == "fetch"][first // 4]
        assert timeline.index(("sent", first - 4, 0)) < fetched_at < timeline.index(("apply", 0, first - 4))


async def test_a_processor_that_never_says_its_statements_are_out_still_gets_every_batch() -> None:
    timeline: list[Event] = []
    consumer = RecordingConsumer({P0: [f"k{i}" for i in range(10)]}, timeline)
    processor = TellingProcessor(timeline, tells=False)
    loop = ConsumerLoop(consumer, processor, max_records=4, fetch_timeout_ms=20)  # type: ignore[arg-type]
    await run_until_applied(loop, timeline, 10)
    assert [offset for kind, _, offset in timeline if kind == "apply"] == list(range(10))


async def test_a_batch_is_fetched_in_slices_and_only_the_first_getmany_waits() -> None:
    timeline: list[Event] = []
    records = FETCH_SLICE * 2 + 7
    consumer = RecordingConsumer({P0: [f"k{i}" for i in range(records)], P1: []}, timeline)
    loop = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=records + 100, fetch_timeout_ms=20)  # type: ignore[arg-type]

    result = await loop.run_once()

    assert result is not None and result.records == records
    assert consumer.fetches == [
        (20, FETCH_SLICE, FETCH_SLICE),
        (0, FETCH_SLICE, FETCH_SLICE),
        (0, 107, 7),  # what is left of the batch size; fewer came: nothing more buffered, the batch is complete
    ]
    # The batch size still bounds the batch: the last slice asks only for what is left of it.
    consumer.fetches.clear()
    consumer.logs[P1] = [f"j{i}" for i in range(FETCH_SLICE + 50)]
    small = ConsumerLoop(consumer, MemoryProcessor(timeline), max_records=FETCH_SLICE + 20, fetch_timeout_ms=20)  # type: ignore[arg-type]
    result = await small.run_once()
    assert result is not None and result.records == FETCH_SLICE + 20
    assert consumer.fetches == [(20, FETCH_SLICE, FETCH_SLICE), (0, 20, 20)]
