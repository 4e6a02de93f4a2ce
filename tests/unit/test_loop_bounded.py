"""The consume loop's bounded run (``ConsumerLoop.run_to``, what ``replay`` drives): it applies each partition up to
its stop offset and no further, commits each finished partition's stop offset (none in a dry run), reports progress,
and gives up on a batch after its attempts, or at once for an error that is not transient."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from aiokafka import TopicPartition

from consumer.loop import ConsumerLoop
from tests.unit.memory_consumer import TOPIC, Event, MemoryConsumer, MemoryProcessor

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def loop_of(consumer: MemoryConsumer, processor: MemoryProcessor, **options: object) -> ConsumerLoop:
    return ConsumerLoop(
        consumer,
        processor,  # type: ignore[arg-type]
        max_records=3,
        fetch_timeout_ms=5,
        retry_initial_s=0.001,
        retry_max_s=0.002,
        **options,  # type: ignore[arg-type]
    )


async def test_each_partition_is_applied_up_to_its_stop_offset_then_committed_there() -> None:
    logs = {P0: [f"a{i}" for i in range(10)], P1: [f"b{i}" for i in range(4)]}
    timeline: list[Event] = []
    consumer = MemoryConsumer(logs, timeline)
    consumer.seek(P0, 2)  # the caller assigns and seeks; the loop starts where the consumer stands
    reports: list[dict[TopicPartition, int]] = []

    def progress(reached: Mapping[TopicPartition, int]) -> None:
        reports.append(dict(reached))

    total = await loop_of(consumer, MemoryProcessor(timeline)).run_to({P0: 7, P1: 4}, progress)

    applied = sorted((p, o) for kind, p, o in timeline if kind == "apply")
    assert applied == [(0, o) for o in range(2, 7)] + [(1, o) for o in range(4)]
    assert total.records == total.applied == 9
    assert ("commit", 0, 7) in timeline and ("commit", 1, 4) in timeline
    assert max(o for kind, p, o in timeline if kind == "commit" and p == 0) == 7
    assert consumer.stopped == {P0, P1}, "a finished partition stays paused"
    seen = [r[P0] for r in reports if P0 in r]  # reported until it finished
    assert seen == sorted(seen) and seen[-1] == 7


async def test_a_dry_run_commits_nothing() -> None:
    timeline: list[Event] = []
    consumer = MemoryConsumer({P0: ["a", "b", "c", "d"]}, timeline)

    total = await loop_of(consumer, MemoryProcessor(timeline), commit_offsets=False).run_to({P0: 4})

    assert total.records == 4
    assert [e for e in timeline if e[0] == "commit"] == []


async def test_a_transient_fault_is_retried_then_raised_once_the_attempts_are_spent() -> None:
    timeline: list[Event] = []
    recovering = MemoryProcessor(timeline, failures=2)
    total = await loop_of(MemoryConsumer({P0: ["a", "b"]}, timeline), recovering, retry_attempts=3).run_to({P0: 2})
    assert (total.records, recovering.applies) == (2, 3)

    failing = MemoryProcessor([], failures=99)
    with pytest.raises(ConnectionError, match="database away"):
        await loop_of(MemoryConsumer({P0: ["a"]}, []), failing, retry_attempts=3).run_to({P0: 1})
    assert failing.applies == 3


async def test_an_error_that_is_not_transient_is_raised_at_once() -> None:
    failing = MemoryProcessor([], failures=99, error=ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await loop_of(MemoryConsumer({P0: ["a"]}, []), failing, retry_attempts=3).run_to({P0: 1})
    assert failing.applies == 1
