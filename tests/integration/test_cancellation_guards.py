"""The SQL guards of the session upsert, against writers that decided on a stale view (no row lock): a CANCELLED
row is never reopened, and a decision made for a booking without a row is refused once the row exists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import store
from consumer.decide import Decision, SessionRow, decide
from consumer.ids import session_id
from models.events import BookingEvent
from models.faults import is_transient
from producer.bookings import booking_event
from tests.integration.harness import query

T0 = datetime(2026, 11, 24, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def event(kind: str, minute: int, student_id: str = "u_42", **fields: object) -> BookingEvent:
    return booking_event(
        kind,  # type: ignore[arg-type]
        "bk_guard",
        student_id=student_id,
        instructor_id="u_7",
        scheduled_start=datetime(2026, 12, 1, 15, tzinfo=UTC),
        duration_minutes=60,
        occurred_at=T0 + timedelta(minutes=minute),
        **fields,  # type: ignore[arg-type]
    )


def link_for(sid: UUID) -> str:
    return f"https://meet.jit.si/{sid.hex}"


async def write(engine: AsyncEngine, *decisions: Decision) -> None:
    async with engine.begin() as conn:
        await store.write_decisions(conn, decisions, "session.events")


async def session_row(engine: AsyncEngine) -> SessionRow:
    async with engine.connect() as conn:
        return (await store.lock_sessions(conn, ["bk_guard"]))["bk_guard"]


async def cancelled_after_a_stale_read(engine: AsyncEngine) -> SessionRow:
    """Approved, then cancelled at minute 5 ("ill"); returns the SCHEDULED row as read before the cancellation: the
    view of a writer that decides without the row lock."""
    await write(engine, decide(None, [event("BookingApproved", 0)], link_for, NOW))
    scheduled = await session_row(engine)
    await write(engine, decide(scheduled, [event("BookingCancelled", 5, cancellation_reason="ill")], link_for, NOW))
    return scheduled


async def test_a_stale_writer_cannot_reopen_a_cancelled_row_nor_confirm_its_reservation(
    engine: AsyncEngine, database_url: str
) -> None:
    approved = event("BookingApproved", 0)
    await write(engine, decide(None, [approved], link_for, NOW))
    scheduled = await session_row(engine)
    cancelled = event("BookingCancelled", 5, cancellation_reason="ill")
    await write(engine, decide(scheduled, [event("BookingConfirmed", 1), cancelled], link_for, NOW))
    # A writer that still sees the SCHEDULED row decides a newer snapshot and a CONFIRMED reservation.
    stale = decide(scheduled, [event("BookingConfirmed", 9, title="Geometry")], link_for, NOW)
    assert stale.session is not None and stale.session.status == "SCHEDULED" and not stale.cancelled

    await write(engine, stale)

    [row] = await query(database_url, "SELECT status, title, cancelled_at, cancellation_reason FROM live_sessions")
    assert row == {
        "status": "CANCELLED",
        "title": "Geometry",
        "cancelled_at": T0 + timedelta(minutes=5),
        "cancellation_reason": "ill",
    }
    assert await query(database_url, "SELECT learner_id, status FROM session_reservations") == [
        {"learner_id": "u_42", "status": "CANCELLED"}
    ]
    kinds = await query(database_url, "SELECT CAST(payload AS jsonb) ->> 'type' AS t FROM outbox_messages ORDER BY id")
    assert [k["t"] for k in kinds] == ["SessionCreated", "SessionCancelled"]  # the stale SessionUpdated dropped


async def test_a_decision_for_a_new_row_that_meets_an_existing_one_is_retried(
    engine: AsyncEngine, database_url: str
) -> None:
    cancelled_first = decide(None, [event("BookingCancelled", 5)], link_for, NOW)
    approved_first = decide(None, [event("BookingApproved", 0)], link_for, NOW)
    await write(engine, cancelled_first)

    with pytest.raises(store.StaleDecision) as raised:
        await write(engine, approved_first)  # it would announce a session that is already cancelled

    assert is_transient(raised.value)
    assert await query(database_url, "SELECT id FROM outbox_messages") == []  # rolled back: nothing announced
    [row] = await query(database_url, "SELECT id, status FROM live_sessions")
    assert row == {"id": session_id("bk_guard"), "status": "CANCELLED"}


async def test_a_stale_writer_adding_a_learner_to_a_cancelled_row_writes_its_reservation_cancelled(
    engine: AsyncEngine, database_url: str
) -> None:
    scheduled = await cancelled_after_a_stale_read(engine)
    # A writer that still sees the SCHEDULED row: a newer snapshot confirmed by another student.
    stale = decide(scheduled, [event("BookingConfirmed", 9, student_id="u_99")], link_for, NOW)
    assert stale.learners == {"u_99"} and not stale.cancelled

    await write(engine, stale)

    assert await query(database_url, "SELECT learner_id, status FROM session_reservations") == [
        {"learner_id": "u_99", "status": "CANCELLED"}
    ]
    assert await query(database_url, "SELECT user_id FROM session_participants") == [{"user_id": "u_99"}]
    kinds = await query(database_url, "SELECT CAST(payload AS jsonb) ->> 'type' AS t FROM outbox_messages ORDER BY id")
    assert [k["t"] for k in kinds] == ["SessionCreated", "SessionCancelled"]


async def test_a_cancellation_closes_earlier_reservations_beside_the_learners_it_writes(
    engine: AsyncEngine, database_url: str
) -> None:
    # The session upsert, the learners' reservations and the reservations the cancellation closes are one statement:
    # each reservation row is written once, whichever way it comes.
    await write(engine, decide(None, [event("BookingApproved", 0), event("BookingConfirmed", 1)], link_for, NOW))
    scheduled = await session_row(engine)
    confirmed_again = event("BookingConfirmed", 2)  # u_42 again: a reservation that exists, CONFIRMED
    by_another = event("BookingConfirmed", 3, student_id="u_43")  # a new learner
    cancelled = event("BookingCancelled", 4, cancellation_reason="moved")
    both = decide(scheduled, [confirmed_again, by_another, cancelled], link_for, NOW)
    assert both.learners == {"u_42", "u_43"} and both.cancelled

    await write(engine, both)

    reservations = await query(database_url, "SELECT learner_id, status FROM session_reservations ORDER BY learner_id")
    assert reservations == [
        {"learner_id": "u_42", "status": "CANCELLED"},
        {"learner_id": "u_43", "status": "CANCELLED"},
    ]
    participants = await query(database_url, "SELECT user_id FROM session_participants ORDER BY user_id")
    assert participants == [{"user_id": "u_42"}, {"user_id": "u_43"}]
    [row] = await query(database_url, "SELECT status, cancellation_reason FROM live_sessions")
    assert row == {"status": "CANCELLED", "cancellation_reason": "moved"}


async def test_a_cancellation_closes_the_reservations_of_learners_not_in_its_batch(
    engine: AsyncEngine, database_url: str
) -> None:
    await write(engine, decide(None, [event("BookingApproved", 0), event("BookingConfirmed", 1)], link_for, NOW))
    await write(
        engine, decide(await session_row(engine), [event("BookingConfirmed", 2, student_id="u_43")], link_for, NOW)
    )
    scheduled = await session_row(engine)

    await write(engine, decide(scheduled, [event("BookingCancelled", 3)], link_for, NOW))

    reservations = await query(database_url, "SELECT learner_id, status FROM session_reservations ORDER BY learner_id")
    assert reservations == [
        {"learner_id": "u_42", "status": "CANCELLED"},
        {"learner_id": "u_43", "status": "CANCELLED"},
    ]


async def test_a_stale_writer_whose_snapshot_the_upsert_refuses_still_writes_its_new_learner_cancelled(
    engine: AsyncEngine, database_url: str
) -> None:
    scheduled = await cancelled_after_a_stale_read(engine)
    # A writer that still sees the SCHEDULED row decides a confirmation older than the cancellation: the upsert
    # leaves the row alone (not newer, no cancellation), so the statement does not write it at all.
    stale = decide(scheduled, [event("BookingConfirmed", 3, student_id="u_99")], link_for, NOW)
    assert stale.session is not None and not stale.cancelled

    await write(engine, stale)

    assert await query(database_url, "SELECT learner_id, status FROM session_reservations") == [
        {"learner_id": "u_99", "status": "CANCELLED"}
    ]
    [row] = await query(database_url, "SELECT status, cancellation_reason FROM live_sessions")
    assert row == {"status": "CANCELLED", "cancellation_reason": "ill"}
