"""The loop's side of parking (consumer/loop.py): a partition where a booking was parked is held at that record (its
commits stop there) while it and every other partition go on; once the lock is gone it is sought back there, what
was fetched ahead of it is dropped, and the parked booking is applied, in order. A consumer and a processor in
memory, sharing one timeline of applies and commits."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection, Sequence

from aiokafka import TopicPartition

from consumer.loop import ConsumerLoop
from consumer.parking import Holds, held_offsets, hold_back, without
from consumer.results import BatchResult, Prepared, offsets_after
from models.records import Decoded, Record
from tests.unit.memory_consumer import TOPIC, Event, MemoryConsumer
from tests.waiting import eventually

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class LockingProcessor:
    """Parks the records of the bookings in ``locked_now``, and those parked before until the loop releases them
    (as BatchProcessor does); applies every other record."""

    def __init__(self, locked: set[str], timeline: list[Event]) -> None:
        self.locked_now = locked
        self.parked: set[str] = set()
        self.timeline = timeline

    async def prepare(self, records: Sequence[Record]) -> Prepared:
        decoded = [Decoded(r, "0" * 64, None, "BookingConfirmed", (r.key or b"").decode(), "applied") for r in records]
        return Prepared(records, 0, decoded, 0.0, 0.0)

    async def apply(self, batch: Prepared, sent: Callable[[], None] | None = None) -> BatchResult:
        if sent is not None:
            sent()  # as BatchProcessor does when its transactions send their first statements
        parked = frozenset(d.booking_id for d in batch.decoded if d.booking_id in self.locked_now | self.parked)
        self.parked |= parked
        kept = without(batch.decoded, parked)
        self.timeline += [("apply", d.record.partition, d.record.offset) for d in kept]
        held = held_offsets(d.record for d in batch.decoded if d.booking_id in parked)
        offsets = hold_back(offsets_after(batch.records), held)
        return BatchResult(len(kept), len(kept), 0, 0, Counter(), 0, 0, next_offsets=offsets, parked=parked, held=held)

    async def locked(self, booking_ids: Collection[str]) -> set[str]:
        return set(booking_ids) & self.locked_now

    def release(self, booking_ids: Collection[str]) -> None:
        self.parked -= set(booking_ids)


def check_timeline(timeline: list[Event], logs: dict[TopicPartition, list[str]]) -> None:
    """Every commit only after each record before it was applied; the locked booking's events applied in order."""
    applied: set[tuple[int, int]] = set()
    first_applied: list[tuple[int, int]] = []
    for kind, partition, offset in timeline:
        if kind == "apply":
            if (partition, offset) not in applied:
                first_applied.append((partition, offset))
            applied.add((partition, offset))
        else:
            missing = [o for o in range(offset) if (partition, o) not in applied]
            assert not missing, f"partition {partition} committed at {offset} before {missing[:5]} were applied"
    locked = [o for p, o in first_applied if p == 0 and logs[P0][o] == "locked"]
    assert locked == sorted(locked) and len(locked) == logs[P0].count("locked"), f"locked applied as {locked}"


async def test_a_parked_booking_holds_only_its_partitions_commits_and_comes_back_in_order() -> None:
    logs = {P0: ["a", "locked", "b", "c", "locked", "d"], P1: ["e", "f", "g"]}
    timeline: list[Event] = []
    consumer = MemoryConsumer(logs, timeline)
    processor = LockingProcessor({"locked"}, timeline)
    loop = ConsumerLoop(
        consumer,
        processor,  # type: ignore[arg-type]
        max_records=3,  # small batches: one is always fetched ahead while another is applied
        fetch_timeout_ms=20,
        retry_initial_s=0.02,
        retry_max_s=0.05,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:

        async def others_applied() -> bool:
            done = {(p, o) for kind, p, o in timeline if kind == "apply"}
            assert {(0, 0), (0, 2), (0, 3), (0, 5), (1, 0), (1, 1), (1, 2)} <= done, f"applied: {done}"
            assert ("commit", 1, 3) in timeline, "P1 not committed to its end"
            return True

        await eventually(others_applied, what="every booking but the locked one applied", timeout_s=10)
        assert P0 in loop.held and loop.held[P0].offset == 1
        for i in range(30):  # more arrives in the held partition, fetched ahead of the release
            logs[P0].append(f"n{i}")
            await asyncio.sleep(0.002)

        async def later_applied() -> bool:
            return ("apply", 0, 35) in timeline

        await eventually(later_applied, what="later records of P0 applied", timeout_s=10)
        assert all(not (kind == "commit" and p == 0 and o > 1) for kind, p, o in timeline), "P0 committed past 1"
        # More, all at once, and the lock gone: the loop goes back to the parked record while a batch of these
        # is fetched ahead.
        logs[P0] += ["locked"] + [f"m{i}" for i in range(1000)]
        processor.locked_now.clear()

        async def all_committed() -> bool:
            assert ("commit", 0, len(logs[P0])) in timeline, f"last: {timeline[-3:]}"
            return True

        await eventually(all_committed, what="P0 committed to its end after the release", timeout_s=10)
        assert not loop.held
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
    check_timeline(timeline, logs)


async def test_bookings_parked_in_partitions_that_moved_before_the_commit_are_released_at_once() -> None:
    # Before: a batch parked bk_a in P1, a rebalance took P1 away before its commit, and bk_a stayed parked without
    # a hold to release it, until P1 came back (then held and released again at once: a spurious seek back).
    released: list[set[str]] = []

    async def locked(bookings: frozenset[str]) -> set[str]:
        return set(bookings)

    consumer = MemoryConsumer({P0: ["bk_b"]}, [])  # owns P0 only
    holds = Holds(
        consumer,
        locked=locked,
        release=lambda bookings: released.append(set(bookings)),
        observer=None,
        initial_s=1.0,
        max_s=1.0,
    )
    holds.hold({(TOPIC, 1): 5}, frozenset({"bk_a"}))
    assert (holds.held, released) == ({}, [{"bk_a"}])
    holds.hold({(TOPIC, 0): 3}, frozenset({"bk_b"}))  # an owned partition: held, nothing released
    assert (set(holds.held), released) == ({P0}, [{"bk_a"}])
