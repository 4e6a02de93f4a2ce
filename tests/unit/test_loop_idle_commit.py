"""An idle ``run`` commits a position that moved past offsets delivering no record (consumer/loop.py
``_commit_skipped_offsets``): an upstream's transaction markers and aborted records end a partition's log when it goes
quiet, and the last batch's commit stopped at its last record, so the group's lag stayed at 1 and the consumer was
reported stalled. Once per move; never for a dry run."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord, TopicPartition

from consumer.loop import ConsumerLoop
from tests.unit.memory_consumer import TOPIC, Event, MemoryConsumer, MemoryProcessor
from tests.waiting import eventually

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class CountingConsumer(MemoryConsumer):
    """Counts the fetches that brought nothing."""

    empty_fetches = 0

    async def getmany(
        self, *, timeout_ms: int, max_records: int = 1000
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        fetched = await super().getmany(timeout_ms=timeout_ms, max_records=max_records)
        self.empty_fetches += not fetched
        return fetched


async def idle_run(consumer: CountingConsumer, timeline: list[Event], *, commit_offsets: bool = True) -> None:
    """Run the loop until ``consumer`` answered ten more empty fetches than when it started skipping."""
    loop = ConsumerLoop(
        consumer,
        MemoryProcessor(timeline),  # type: ignore[arg-type]
        max_records=10,
        fetch_timeout_ms=5,
        commit_offsets=commit_offsets,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:

        async def applied() -> bool:
            assert ("apply", 0, 1) in timeline, f"timeline: {timeline}"
            return True

        await eventually(applied, what="both records applied", timeout_s=5)
        consumer.position_of[P0] = 4  # the fetch went past a commit marker and an aborted record: nothing delivered
        quiet_from = consumer.empty_fetches

        async def quiet() -> bool:
            return consumer.empty_fetches >= quiet_from + 10

        await eventually(quiet, what="ten idle fetches", timeout_s=5)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)


async def test_an_idle_loop_commits_past_offsets_that_delivered_nothing_once() -> None:
    timeline: list[Event] = []
    await idle_run(CountingConsumer({P0: ["a", "b"], P1: []}, timeline), timeline)
    commits = [e for e in timeline if e[0] == "commit"]
    assert ("commit", 0, 2) in commits  # the batch's own commit, at its last record
    assert commits.count(("commit", 0, 4)) == 1, commits  # past the markers, once
    assert commits.count(("commit", 1, 0)) == 1, commits  # a partition never committed: once, where it stands
    assert not [c for c in commits if c[1] == 0 and c[2] > 4]


async def test_a_dry_run_commits_nothing_idle_or_not() -> None:
    timeline: list[Event] = []
    await idle_run(CountingConsumer({P0: ["a", "b"], P1: []}, timeline), timeline, commit_offsets=False)
    assert not [e for e in timeline if e[0] == "commit"]
