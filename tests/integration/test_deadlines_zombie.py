"""It never hangs (CONTRACT, Process) when a consumer froze inside its batch's transaction: the zombie's uncommitted
inbox rows (and a session row it locked) hold only the partitions it held them in, while every other partition is
applied, published and committed; once its transaction ends, everything is applied in order, nothing twice.

The zombie is played by an open transaction that did what a consumer's batch does first: insert inbox rows of the
records its partitions' new owner is about to receive, and lock a session row. Apache Kafka only, as every
test_deadlines_* module."""

from __future__ import annotations

import time
from uuid import UUID

import pytest
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.settings import Settings
from models.events import BookingEvent
from tests.integration.bookings import event
from tests.integration.harness import Produced, committed_offsets, committed_to_the_end, publish, query
from tests.integration.watched_runs import HANG_S, all_answer_ready, report, second_wave, watched_run
from tests.integration.workloads import all_applied_and_published, assert_matches_reference, workload
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]

PARTITIONS = 4
_EVERY = list(range(PARTITIONS))


def partition_of(booking_id: str) -> int:
    """The input partition a booking's records go to: the producer's default partitioner (murmur2 of the key)."""
    return int(DefaultPartitioner()(booking_id.encode(), _EVERY, _EVERY))


_ZOMBIE_INBOX_ROW = text(
    "INSERT INTO inbox_messages (message_id, event_type, booking_id, payload_sha256, outcome, topic, partition,"
    " \"offset\") VALUES (:m, :t, :b, repeat('0', 64), 'applied', :topic, :p, 0)"
)


async def applied(database_url: str, events: list[BookingEvent]) -> set[UUID]:
    """The message ids of ``events`` the inbox holds (committed)."""
    rows = await query(
        database_url,
        "SELECT message_id FROM inbox_messages WHERE message_id = ANY(CAST(:ids AS uuid[]))",
        ids=[e.message_id for e in events],
    )
    return {row["message_id"] for row in rows}


@pytest.mark.partitions(PARTITIONS)
async def test_a_consumer_frozen_inside_its_batch_holds_only_its_partitions(
    settings: Settings, database_url: str
) -> None:
    """A zombie's uncommitted inbox rows hold two partitions: one for a booking with a session row (which the
    zombie also locked), one for a new booking (no session row at all: nothing ``SKIP LOCKED`` could find). Before,
    the new owner's inbox insert waited on them, parked nothing and retried its whole batch until the zombie's
    transaction ended: no partition went on. Now the held partitions' bookings in that batch are parked and their
    commits stop at their first parked record; every other partition is applied, published and committed."""
    bookings = 200
    first, later = workload(bookings), second_wave(bookings)
    produced = Produced()
    await publish(settings, first, produced)
    frozen = later[0]  # bk_0000's reschedule: its session row exists
    new = next(
        e
        for i in range(1000)
        if partition_of((e := event("BookingApproved", f"bk_new_{i:03d}", 20)).booking_id)
        != partition_of(frozen.booking_id)
    )
    held = {partition_of(frozen.booking_id), partition_of(new.booking_id)}
    others = [e for e in later if partition_of(e.booking_id) not in held]
    assert others, "every reschedule fell into a held partition"
    async with watched_run(settings) as run:
        await all_applied_and_published(database_url, first, timeout_s=HANG_S)
        await eventually(lambda: all_answer_ready(run), what="ready before the fault", timeout_s=HANG_S)
        before = dict(produced.ends)
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as zombie, zombie.begin() as transaction:
                for e in (frozen, new):
                    await zombie.execute(
                        _ZOMBIE_INBOX_ROW,
                        {"m": e.message_id, "t": e.type, "b": e.booking_id, "topic": settings.input_topic,
                         "p": partition_of(e.booking_id)},
                    )  # fmt: skip
                await zombie.execute(
                    text("SELECT id FROM live_sessions WHERE booking_request_id = :b FOR UPDATE"),
                    {"b": frozen.booking_id},
                )
                run.fault_at = started = time.monotonic()
                await publish(settings, later, produced)
                new_offset = produced.ends.get((settings.input_topic, partition_of(new.booking_id)), 0)
                await publish(settings, [new], produced)

                async def others_applied_and_committed() -> bool:
                    missing = len(others) - len(await applied(database_url, others))
                    assert missing == 0, f"{missing} of {len(others)} events of partitions not held not applied"
                    committed = await committed_offsets(settings, sorted(produced.ends))
                    for (topic, partition), end in produced.ends.items():
                        if partition in held:
                            limit = (
                                new_offset if partition == partition_of(new.booking_id) else before[(topic, partition)]
                            )
                            at = committed[(topic, partition)]
                            assert at is not None and at <= limit, f"held partition {partition} committed at {at}"
                        else:
                            assert committed[(topic, partition)] == end, f"partition {partition}: {committed}"
                    waiting = await query(
                        database_url, "SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL"
                    )
                    assert waiting[0]["n"] == 0, f"{waiting[0]['n']} outbox rows not published"
                    return True

                async def both_held() -> bool:
                    consumer = run.probes[-1].readiness["checks"]["consumer"]
                    shown = set(consumer.get("held", {}))
                    assert shown == {f"{settings.input_topic}/{p}" for p in held}, f"consumer check: {consumer}"
                    return True

                await eventually(both_held, what="/readyz to list the two held partitions", timeout_s=HANG_S)
                # Before, nothing of ``later`` was applied until the zombie's transaction ended.
                await eventually(
                    others_applied_and_committed, what="partitions not held applied and committed", timeout_s=HANG_S
                )
                others_s = time.monotonic() - started
                assert not await applied(database_url, [frozen, new]), "a record the zombie holds was applied"
                zombie_held_s = time.monotonic() - started
                await transaction.rollback()  # as PostgreSQL ends a frozen session (idle-in-transaction timeout)
            released = time.monotonic()
            await all_applied_and_published(database_url, first + later + [new], timeout_s=HANG_S)
            recovered_s = time.monotonic() - released
        finally:
            await engine.dispose()

        await eventually(
            lambda: committed_to_the_end(settings, produced),
            what="every partition committed to its end",
            timeout_s=HANG_S,
        )
        assert run.process.returncode is None
        assert all(p.alive == 200 for p in run.since_fault()), f"/healthz failed during the hold: {run.said()}"
        rebalances = [line for line in run.stderr if b"partitions_assigned" in line]
        assert len(rebalances) == 1, "assigned again: the consumer had left its group"
        parked = [line for line in run.stderr if b"bookings_parked" in line]
        assert any(b"inbox rows" in line for line in parked), f"not parked on inbox rows: {parked}"
        report(
            "consumer frozen inside its batch",
            others_applied_and_committed_s=round(others_s, 1),
            zombie_held_s=round(zombie_held_s, 1),
            recover_all_applied_after_release_s=round(recovered_s, 1),
            said=run.said(),
        )
    await assert_matches_reference(settings, database_url, first + later + [new])
