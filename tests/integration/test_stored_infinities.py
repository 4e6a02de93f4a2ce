"""Session rows holding PostgreSQL's -infinity or infinity, as an earlier release stored an event dated
0001-01-01T00:00:00Z (asyncpg writes that instant, and 9999-12-31T23:59:59.999999Z, as the infinities, and reads
them back as naive datetimes): such a booking's later events still apply, where each of them used to fail with
"can't compare offset-naive and offset-aware datetimes" and be dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import store
from consumer.decide import SessionRow, decide
from models.events import BookingEvent
from producer.bookings import booking_event
from tests.integration.harness import query

T0 = datetime(2026, 11, 24, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
BOOKING = "bk_infinity"


def link_for(sid: UUID) -> str:
    return f"https://meet.jit.si/{sid.hex}"


def event(kind: str, minute: int, **fields: object) -> BookingEvent:
    return booking_event(
        kind,  # type: ignore[arg-type]
        BOOKING,
        student_id="u_42",
        instructor_id="u_7",
        scheduled_start=datetime(2026, 12, 1, 15, tzinfo=UTC),
        duration_minutes=60,
        occurred_at=T0 + timedelta(minutes=minute),
        **fields,  # type: ignore[arg-type]
    )


async def locked(engine: AsyncEngine) -> SessionRow:
    async with engine.connect() as conn:
        return (await store.lock_sessions(conn, [BOOKING]))[BOOKING]


async def apply(engine: AsyncEngine, kind: str, minute: int, **fields: object) -> None:
    """Decide on the locked row and write, in one transaction, as the consumer does."""
    async with engine.begin() as conn:
        current = (await store.lock_sessions(conn, [BOOKING])).get(BOOKING)
        decision = decide(current, [event(kind, minute, **fields)], link_for, NOW)
        await store.write_decisions(conn, [decision], "session.events")


@pytest.mark.parametrize("stored", ["-infinity", "infinity"])
async def test_a_snapshot_version_stored_as_an_infinity_is_read_aware_and_later_events_apply(
    stored: str, engine: AsyncEngine, database_url: str
) -> None:
    await apply(engine, "BookingApproved", 0)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE live_sessions SET snapshot_occurred_at = CAST(CAST(:at AS text) AS timestamptz)"
                " WHERE booking_request_id = :b"
            ),
            {"at": stored, "b": BOOKING},
        )

    row = await locked(engine)
    expected = datetime.min if stored == "-infinity" else datetime.max
    assert row.version[0] == expected.replace(tzinfo=UTC)

    await apply(engine, "BookingCancelled", 5, cancellation_reason="ill")  # before the fix: TypeError
    await apply(engine, "BookingConfirmed", 10)

    rows = await query(
        database_url,
        "SELECT status, cancellation_reason, snapshot_occurred_at = CAST(CAST(:at AS text) AS timestamptz) AS kept"
        " FROM live_sessions",
        at=stored,
    )
    # The cancellation applies whatever the version; a newer snapshot applies only after -infinity.
    assert rows == [{"status": "CANCELLED", "cancellation_reason": "ill", "kept": stored == "infinity"}]


async def test_a_cancellation_stored_at_minus_infinity_stays_the_earliest(
    engine: AsyncEngine, database_url: str
) -> None:
    await apply(engine, "BookingCancelled", 0, cancellation_reason="first")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE live_sessions SET cancelled_at = '-infinity' WHERE booking_request_id = :b"), {"b": BOOKING}
        )

    row = await locked(engine)
    assert row.cancellation is not None and row.cancellation.cancelled_at == datetime.min.replace(tzinfo=UTC)

    await apply(engine, "BookingCancelled", 5, cancellation_reason="later")
    await apply(engine, "BookingApproved", 10)

    rows = await query(
        database_url, "SELECT status, cancellation_reason, cancelled_at = '-infinity' AS kept FROM live_sessions"
    )
    assert rows == [{"status": "CANCELLED", "cancellation_reason": "first", "kept": True}]
