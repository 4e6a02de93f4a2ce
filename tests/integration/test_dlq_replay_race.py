"""`dlq replay` against a consumer in the middle of a run of repeats (a redelivery, a replay): the command deletes a
dead letter's `dead_lettered` inbox row, sends the copy and commits only after the broker's acks; the consumer that
meets the copy before that commit must wait for it and apply the copy, never count it as a repeat of the row being
deleted (which, once deleted, leaves the event applied nowhere: lost without a word; a newcomer's find, one run in
four when byte-identical redeliveries came just before the replay)."""

from __future__ import annotations

import asyncio

from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.service import open_service
from booking_sessions.settings import Settings
from consumer.decode import payload_digest
from models.records import Record
from producer.bookings import as_record
from tests.integration.bookings import event
from tests.integration.harness import query
from tests.waiting import eventually

_DEAD_LETTERED = text(
    "INSERT INTO inbox_messages (message_id, event_type, booking_id, payload_sha256, outcome, dlq_reason, topic,"
    " partition, \"offset\") VALUES (:m, 'BookingConfirmed', :b, :h, 'dead_lettered', 'processing_error', :t, 0, 0)"
)


def record(settings: Settings, offset: int, value: bytes | None, key: bytes | None) -> Record:
    """A record of partition 0 of the input topic, as the consumer would hand it over."""
    return Record(settings.input_topic, 0, offset, key, value)


async def test_a_replayed_dead_letter_met_during_a_run_of_repeats_waits_for_the_replay_and_applies(
    settings: Settings, database_url: str
) -> None:
    warm = as_record(event("BookingConfirmed", "bk_warm", 0), settings.input_topic)
    replayed = event("BookingConfirmed", "bk_replayed", 1)
    copy = as_record(replayed, settings.input_topic)
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with open_service(settings) as svc:
            processor = svc.loop.processor
            await processor.process([record(settings, 0, warm.value, warm.key)])
            # A run of repeats: from here the processor first asks the inbox which records' bytes it holds.
            repeats = await processor.process([record(settings, i, warm.value, warm.key) for i in range(1, 4)])
            assert repeats.duplicates == 3
            async with engine.begin() as conn:  # dead-lettered earlier, as processing_error, with these bytes
                params = {"m": replayed.message_id, "b": replayed.booking_id, "h": payload_digest(copy.value)}
                await conn.execute(_DEAD_LETTERED, params | {"t": settings.input_topic})
            async with engine.connect() as dlq_replay, dlq_replay.begin() as transaction:
                # What `dlq replay` holds while the broker acknowledges the copy: the row deleted, not committed.
                await dlq_replay.execute(
                    text("DELETE FROM inbox_messages WHERE message_id = :m"), {"m": replayed.message_id}
                )
                applying = asyncio.create_task(processor.process([record(settings, 4, copy.value, copy.key)]))

                async def waits_or_done() -> bool:
                    if applying.done():
                        return True
                    waiting = await query(
                        database_url,
                        "SELECT count(*) AS n FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    assert waiting[0]["n"] > 0, "the consumer is not waiting for the replay's transaction yet"
                    return True

                await eventually(waits_or_done, what="the copy to wait for the replay's commit", timeout_s=30)
                await transaction.commit()
            result = await asyncio.wait_for(applying, timeout=30)
        assert (result.applied, result.duplicates) == (1, 0), f"the copy was not applied: {result}"
        rows = await query(
            database_url, "SELECT outcome FROM inbox_messages WHERE message_id = :m", m=replayed.message_id
        )
        assert rows == [{"outcome": "applied"}]
        sessions = await query(database_url, "SELECT 1 FROM live_sessions WHERE booking_request_id = 'bk_replayed'")
        assert len(sessions) == 1
    finally:
        await engine.dispose()
