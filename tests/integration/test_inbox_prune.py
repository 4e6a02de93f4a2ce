"""`booking-sessions inbox prune`: old rows go in bounded batches, recent ones stay; and after pruning, a redelivered
old event still changes nothing (CONTRACT: the session-level guard)."""

from __future__ import annotations

from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.settings import Settings
from producer.bookings import as_record
from tests.integration.bookings import START, event
from tests.integration.harness import Produced, consume_all, query, service
from tests.integration.operator_cli import assert_one_line_error, invoke, publish_one_by_one


async def age_rows(database_url: str, days: int, where: str = "true") -> None:
    """Pretend these rows were processed ``days`` ago (the clock of a test cannot wait a month)."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE inbox_messages SET processed_at = now() - make_interval(days => :d) WHERE {where}"),
                {"d": days},
            )
    finally:
        await engine.dispose()


async def inbox_count(database_url: str) -> int:
    [row] = await query(database_url, "SELECT count(*) AS n FROM inbox_messages")
    return int(row["n"])


async def test_prune_deletes_old_rows_in_bounded_batches_and_keeps_recent_ones(
    settings: Settings, database_url: str
) -> None:
    produced = Produced()
    await publish_one_by_one(settings, [event("BookingApproved", f"bk_{i}", 0) for i in range(10)], produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
    await age_rows(database_url, 40, "booking_id IN ('bk_0', 'bk_1', 'bk_2', 'bk_3', 'bk_4', 'bk_5', 'bk_6')")

    dry = await invoke(settings, "inbox", "prune", "--older-than", "30d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: would delete 7 inbox rows processed before" in dry.stdout
    assert await inbox_count(database_url) == 10

    done = await invoke(settings, "inbox", "prune", "--older-than", "30d", "--batch-rows", "3")
    assert done.exit_code == 0, done.output
    assert "deleted 7 of 7 inbox rows processed before" in done.stdout and "in 3 batch(es)" in done.stdout
    rows = await query(database_url, "SELECT booking_id FROM inbox_messages ORDER BY 1")
    assert [r["booking_id"] for r in rows] == ["bk_7", "bk_8", "bk_9"]
    again = await invoke(settings, "inbox", "prune", "--older-than", "30d")
    assert "deleted 0 of 0 inbox rows" in again.stdout, again.output


async def test_redelivered_event_after_prune_changes_nothing(settings: Settings, database_url: str) -> None:
    approved = event("BookingApproved", "bk_1", 0)
    rescheduled = event("BookingConfirmed", "bk_1", 10, scheduled_start=START.replace(hour=18))
    first, redelivered = Produced(), Produced()
    async with service(settings) as svc:
        await publish_one_by_one(settings, [approved, rescheduled], first)
        await consume_all(svc, first)
        await svc.relay.drain()
        before = await query(database_url, "SELECT * FROM live_sessions")
        outbox_before = await query(database_url, "SELECT message_id FROM outbox_messages ORDER BY id")
        await age_rows(database_url, 45)

        pruned = await invoke(settings, "inbox", "prune", "--older-than", "30d")
        assert "deleted 2 of 2" in pruned.stdout, pruned.output
        assert await inbox_count(database_url) == 0
        # The old approval again, same id and bytes, and the inbox no longer knows it.
        await publish_one_by_one(settings, [as_record(approved, settings.input_topic)], redelivered)
        await consume_all(svc, redelivered)
        await svc.relay.drain()

    assert await query(database_url, "SELECT * FROM live_sessions") == before  # updated_at included
    assert await query(database_url, "SELECT message_id FROM outbox_messages ORDER BY id") == outbox_before
    [row] = await query(database_url, "SELECT message_id, outcome FROM inbox_messages")
    assert row == {"message_id": approved.message_id, "outcome": "applied"}


async def test_prune_refuses_a_too_short_or_unreadable_age(settings: Settings) -> None:
    assert_one_line_error(await invoke(settings, "inbox", "prune", "--older-than", "30m"), "at least 1h")
    assert_one_line_error(await invoke(settings, "inbox", "prune", "--older-than", "30"), "not a duration")
