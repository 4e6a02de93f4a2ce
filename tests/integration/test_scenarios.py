"""The seed's scenarios end to end: real broker, real PostgreSQL, the real loop and relay."""

from __future__ import annotations

from booking_sessions.settings import Settings
from consumer.ids import meeting_link, session_created_id, session_id
from models.events import BookingEvent
from tests.integration.bookings import START, event
from tests.integration.harness import (
    Produced,
    consume_all,
    learners,
    output_messages,
    publish,
    query,
    service,
    sessions,
)
from tests.integration.racing import publish_raced
from tests.servers.ladder import KafkaHandle


async def run_through(settings: Settings, events: list[BookingEvent]) -> None:
    produced = Produced()
    await publish(settings, events, produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()


async def test_auto_approved_booking_creates_one_session_and_one_session_created(
    settings: Settings, database_url: str
) -> None:
    await run_through(settings, [event("BookingApproved", "bk_auto", 0, auto_approved=True)])

    rows = await sessions(database_url)
    assert list(rows) == ["bk_auto"]
    row = rows["bk_auto"]
    sid = session_id("bk_auto")
    assert row["id"] == sid
    assert row["status"] == "SCHEDULED"
    assert row["scheduled_start"] == START
    assert row["meeting_link"] == meeting_link("https://meet.jit.si", sid, b"test-secret-of-at-least-32-bytes-0000")
    assert "bk_auto" not in str(row["meeting_link"]) and str(sid) not in str(row["meeting_link"])
    assert await learners(database_url) == set()  # approved, not yet confirmed: no learner
    messages = await output_messages(settings, 1)
    assert [(m["type"], m["message_id"], m["booking_id"]) for m in messages] == [
        ("SessionCreated", str(session_created_id(sid)), "bk_auto")
    ]
    session = messages[0]["session"]
    assert isinstance(session, dict)
    assert session["id"] == str(sid) and session["scheduled_start"] == "2026-12-01T15:00:00Z"
    assert session["meeting_link"] == row["meeting_link"]


async def test_manual_approval_then_confirmation(settings: Settings, database_url: str) -> None:
    await run_through(settings, [event("BookingApproved", "bk_manual", 0), event("BookingConfirmed", "bk_manual", 5)])

    assert list(await sessions(database_url)) == ["bk_manual"]
    assert await learners(database_url) == {("bk_manual", "student-bk_manual", "LEARNER", "CONFIRMED")}
    messages = await output_messages(settings, 1)
    assert [m["type"] for m in messages] == ["SessionCreated"]


async def test_the_same_confirmation_three_times_applies_once(settings: Settings, database_url: str) -> None:
    confirmed = event("BookingConfirmed", "bk_triple", 1)

    await run_through(settings, [confirmed, confirmed, confirmed])

    assert list(await sessions(database_url)) == ["bk_triple"]
    assert await learners(database_url) == {("bk_triple", "student-bk_triple", "LEARNER", "CONFIRMED")}
    inbox = await query(database_url, "SELECT message_id, outcome FROM inbox_messages")
    assert inbox == [{"message_id": confirmed.message_id, "outcome": "applied"}]
    assert [m["type"] for m in await output_messages(settings, 1)] == ["SessionCreated"]


async def test_a_later_confirmation_leaves_the_learner_rows_untouched(settings: Settings, database_url: str) -> None:
    # Most confirmations of a live stream repeat one the rows have (a new message id, the same student). The
    # session row takes the newer snapshot; the participant and the reservation are not written, not even locked
    # (a locked row carries the locker's transaction id in xmax).
    produced = Produced()
    async with service(settings) as svc:
        for batch in ([event("BookingConfirmed", "bk_again", 1)], [event("BookingConfirmed", "bk_again", 2)]):
            await publish(settings, batch, produced)
            await consume_all(svc, produced)

    assert await learners(database_url) == {("bk_again", "student-bk_again", "LEARNER", "CONFIRMED")}
    for table in ("session_participants", "session_reservations"):
        assert await query(database_url, f"SELECT xmax::text AS xmax FROM {table}") == [{"xmax": "0"}], table
    inbox = await query(database_url, "SELECT outcome FROM inbox_messages")
    assert [r["outcome"] for r in inbox] == ["applied", "applied"]


async def test_two_confirmations_raced_from_two_producers(
    kafka: KafkaHandle, settings: Settings, database_url: str
) -> None:
    produced = await publish_raced(
        kafka, settings, [event("BookingConfirmed", "bk_race", 3), event("BookingConfirmed", "bk_race", 3)]
    )
    assert len({(t, p) for t, p in produced.ends}) == 1  # keyed by booking id: one partition, one order

    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()

    assert list(await sessions(database_url)) == ["bk_race"]
    assert await learners(database_url) == {("bk_race", "student-bk_race", "LEARNER", "CONFIRMED")}
    outcomes = await query(database_url, "SELECT outcome FROM inbox_messages")
    assert [r["outcome"] for r in outcomes] == ["applied", "applied"]
    assert [m["type"] for m in await output_messages(settings, 1)] == ["SessionCreated"]


async def test_redelivered_message_id_and_interleaved_second_booking(settings: Settings, database_url: str) -> None:
    approved = event("BookingApproved", "bk_one", 0)
    events = [
        approved,
        event("BookingApproved", "bk_two", 0),
        event("BookingConfirmed", "bk_one", 2),
        event("BookingConfirmed", "bk_two", 3),
        approved,  # the upstream re-published its approval: same message id, same bytes
    ]

    await run_through(settings, events)

    assert sorted(await sessions(database_url)) == ["bk_one", "bk_two"]
    assert await learners(database_url) == {
        ("bk_one", "student-bk_one", "LEARNER", "CONFIRMED"),
        ("bk_two", "student-bk_two", "LEARNER", "CONFIRMED"),
    }
    inbox = await query(database_url, "SELECT count(*) AS n FROM inbox_messages")
    assert inbox == [{"n": 4}]
    created = sorted(
        (m["booking_id"], m["message_id"]) for m in await output_messages(settings, 2) if m["type"] == "SessionCreated"
    )
    assert created == sorted((b, str(session_created_id(session_id(b)))) for b in ("bk_one", "bk_two"))
