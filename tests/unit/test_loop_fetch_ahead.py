"""``run`` fetches the next batch while the batch in hand waits for PostgreSQL, but only once that batch's
transactions have sent their first statements (``BatchProcessor.apply``'s ``sent``), and in slices of
``FETCH_SLICE`` records with a yield between them (consumer/loop.py): the fetch's CPU never holds back a statement
of the batch in hand for long."""

from __future__ import annotations

import asyncio
import contextlib
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
    """Notes each getmany that will return records as it starts (("fetch", 0, 0) on the timeline), every getmany in
    ``fetches``, and sets ``answered`` whenever one returns."""

    def __init__(self, logs: dict[TopicPartition, list[str]], timeline: list[Event]) -> None:
        super().__init__(logs, timeline)
        self.fetches: list[Fetch] = []
        self.answered = asyncio.Event()

    async def getmany(
        self, *, timeout_ms: int, max_records: int = 1000
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if any(self.position_of[tp] < len(log) for tp, log in self.logs.items() if tp not in self.stopped):
            self.timeline.append(("fetch", 0, 0))
        out = await super().getmany(timeout_ms=timeout_ms, max_records=max_records)
        self.fetches.append((timeout_ms, max_records, sum(len(records) for records in out.values())))
        self.answered.set()
        return out


class TellingProcessor(MemoryProcessor):
    """Notes on the timeline when it tells the loop its statements are out (("sent", first offset, 0)), then
    waits (as for PostgreSQL) until the consumer answered a getmany, at most a second; or never tells the loop
    (``tells=False``: a processor that does not know)."""

    def __init__(self, timeline: list[Event], consumer: RecordingConsumer, *, tells: bool = True) -> None:
        super().__init__(timeline)
        self.consumer = consumer
        self.tells = tells

    async def apply(self, batch: Prepared, sent: Callable[[], None] | None = None) -> BatchResult:
        await asyncio.sleep(0)  # as the real one yields (a connection, BEGIN) before its first statement
        if self.tells and sent is not None:
            self.timeline.append(("sent", batch.records[0].offset, 0))
            self.consumer.answered.clear()
            sent()
            with contextlib.suppress(TimeoutError):  # a deadline, not a pause: a loop that fetches nothing goes on
                await asyncio.wait_for(self.consumer.answered.wait(), timeout=1)
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
    processor = TellingProcessor(timeline, consumer)
    loop = ConsumerLoop(consumer, processor, max_records=4, fetch_timeout_ms=20)  # type: ignore[arg-type]
    await run_until_applied(loop, timeline, 12)

    assert [offset for kind, _, offset in timeline if kind == "apply"] == list(range(12)), "each record once, in order"
    fetches = [i for i, e in enumerate(timeline) if e[0] == "fetch"]
    assert len(fetches) == 3, timeline
    for batch in (1, 2):  # each later batch: fetched after the batch before it sent its statements, before it applied
        before = 4 * (batch - 1)
        assert timeline.index(("sent", before, 0)) < fetches[batch] < timeline.index(("apply", 0, before)), timeline


async def test_a_processor_that_never_says_its_statements_are_out_still_gets_every_batch() -> None:
    timeline: list[Event] = []
    consumer = RecordingConsumer({P0: [f"k{i}" for i in range(10)]}, timeline)
    processor = TellingProcessor(timeline, consumer, tells=False)
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
