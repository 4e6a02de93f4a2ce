"""``run`` overlaps a batch's offset commit with the next batch's transactions (consumer/loop.py): the next batch
applies while the commit is in flight, but the next commit starts only after it, so offsets go in order, each after
its own batch; the last commit ends before ``run`` returns, and its error comes out of ``run``."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumer.loop import BatchHook, ConsumerLoop
from consumer.results import BatchResult
from tests.unit.memory_consumer import TOPIC, Event, MemoryConsumer, MemoryProcessor
from tests.waiting import eventually

P0 = TopicPartition(TOPIC, 0)


class GatedConsumer(MemoryConsumer):
    """Commits wait at ``gate`` while it is closed; the timeline shows when each began and ended."""

    def __init__(self, logs: dict[TopicPartition, list[str]], timeline: list[Event]) -> None:
        super().__init__(logs, timeline)
        self.gate = asyncio.Event()

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.timeline += [("commit-start", tp.partition, meta.offset) for tp, meta in offsets.items()]
        await self.gate.wait()
        self.timeline += [("commit", tp.partition, meta.offset) for tp, meta in offsets.items()]


def loop_over(consumer: GatedConsumer, timeline: list[Event], after_commit: BatchHook | None = None) -> ConsumerLoop:
    return ConsumerLoop(
        consumer,
        MemoryProcessor(timeline),  # type: ignore[arg-type]
        max_records=2,
        fetch_timeout_ms=20,
        after_commit=after_commit,
    )


async def test_the_next_batch_applies_while_a_commit_is_in_flight_and_commits_only_after_it() -> None:
    timeline: list[Event] = []
    consumer = GatedConsumer({P0: ["a", "b", "c", "d", "e", "f"]}, timeline)
    stop = asyncio.Event()
    running = asyncio.create_task(loop_over(consumer, timeline).run(stop))
    try:

        async def second_applied_first_commit_held() -> bool:
            assert ("apply", 0, 3) in timeline, f"timeline: {timeline}"
            return True

        await eventually(second_applied_first_commit_held, what="batch 2 applied during batch 1's commit", timeout_s=5)
        assert ("commit-start", 0, 2) in timeline and ("commit", 0, 2) not in timeline
        assert ("commit-start", 0, 4) not in timeline  # the next commit waits for the one in flight
        consumer.gate.set()

        async def all_committed() -> bool:
            assert ("commit", 0, 6) in timeline, f"timeline: {timeline}"
            return True

        await eventually(all_committed, what="every offset committed", timeout_s=5)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)
    commits = [o for kind, _, o in timeline if kind == "commit"]
    assert commits == sorted(commits) == [2, 4, 6]
    for kind, _, offset in timeline:  # each commit after every record before it was applied
        if kind == "commit-start":
            assert {("apply", 0, o) for o in range(offset)} <= set(timeline[: timeline.index((kind, 0, offset))])


async def test_run_returns_after_the_last_commit_and_raises_its_error() -> None:
    timeline: list[Event] = []
    consumer = GatedConsumer({P0: ["a", "b"]}, timeline)
    consumer.gate.set()
    stop = asyncio.Event()

    async def failing_hook(result: BatchResult) -> None:
        stop.set()  # asked to stop while this batch's commit is in flight
        raise RuntimeError("after-commit hook failed")

    running = asyncio.create_task(loop_over(consumer, timeline, after_commit=failing_hook).run(stop))
    with pytest.raises(RuntimeError, match="after-commit hook failed"):
        await asyncio.wait_for(running, timeout=5)
    assert ("commit", 0, 2) in timeline


async def test_the_commit_hook_hears_how_long_the_batch_took_from_apply_to_commit() -> None:
    # The bench's (f) splits a record's time with it (bench/latency.py, latency_split): the commit is held for
    # at least 50 ms here, so the batch's total covers its transactions and that commit.
    timeline: list[Event] = []
    consumer = GatedConsumer({P0: ["a", "b"]}, timeline)
    heard: list[BatchResult] = []
    stop = asyncio.Event()

    async def hook(result: BatchResult) -> None:
        heard.append(result)
        stop.set()

    async def commit_began() -> bool:
        return ("commit-start", 0, 2) in timeline

    running = asyncio.create_task(loop_over(consumer, timeline, after_commit=hook).run(stop))
    await eventually(commit_began, what="the commit began", timeout_s=5)
    await asyncio.sleep(0.05)  # not a wait for a condition: the broker holding the commit for 50 ms
    consumer.gate.set()
    await asyncio.wait_for(running, timeout=5)
    [result] = heard
    assert result.total_s >= 0.05 + result.database_s
