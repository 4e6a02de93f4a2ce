"""Cancellation end to end (CONTRACT "What each event does", Output): the real loop, relay, broker and database.

Each ``step`` is published and consumed before the next, so a step is one batch or more: a cancellation in a later
step than the approval meets an announced session; one in the same step as the first approval does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from booking_sessions.settings import Settings
from consumer.ids import session_cancelled_id, session_created_id, session_id
from models.events import BookingEvent
from tests.integration.bookings import T0, event
from tests.integration.harness import (
    Produced,
    consume_all,
    execute,
    learners,
    output_messages,
    publish,
    query,
    read_json,
    service,
    sessions,
    snapshot,
)
from tests.integration.racing import publish_raced
from tests.servers.ladder import KafkaHandle


def cancel(booking: str, minute: int, reason: str | None = "student ill") -> BookingEvent:
    return event("BookingCancelled", booking, minute, cancellation_reason=reason)


async def in_steps(settings: Settings, *steps: Sequence[BookingEvent]) -> None:
    """Publish each step's events and consume them all before the next step; then drain the outbox."""
    produced = Produced()
    async with service(settings) as svc:
        for step in steps:
            await publish(settings, step, produced)
            await consume_all(svc, produced)
        await svc.relay.drain()


async def inbox(database_url: str) -> list[dict[str, Any]]:
    return await query(database_url, "SELECT message_id, event_type, outcome FROM inbox_messages ORDER BY message_id")


def kinds(messages: list[dict[str, Any]]) -> list[tuple[object, object, object]]:
    return [(m["type"], m["message_id"], m["session"]["status"]) for m in messages]


def announced_then_cancelled(booking: str) -> list[tuple[str, str, str]]:
    sid = session_id(booking)
    return [
        ("SessionCreated", str(session_created_id(sid)), "SCHEDULED"),
        ("SessionCancelled", str(session_cancelled_id(sid)), "CANCELLED"),
    ]


async def test_approve_confirm_cancel_closes_the_session_and_tells_the_video_service_once(
    settings: Settings, database_url: str
) -> None:
    approved, confirmed, cancelled = (
        event("BookingApproved", "bk_c1", 0),
        event("BookingConfirmed", "bk_c1", 1),
        cancel("bk_c1", 2),
    )

    await in_steps(settings, [approved, confirmed], [cancelled])

    row = (await sessions(database_url))["bk_c1"]
    assert (row["status"], row["cancelled_at"], row["cancellation_reason"]) == (
        "CANCELLED",
        cancelled.occurred_at,
        "student ill",
    )
    assert row["cancellation_message_id"] == cancelled.message_id
    assert await learners(database_url) == {("bk_c1", "student-bk_c1", "LEARNER", "CANCELLED")}
    messages = await output_messages(settings, 2)
    assert kinds(messages) == announced_then_cancelled("bk_c1")
    assert messages[1]["session"]["cancellation_reason"] == "student ill"  # type: ignore[index]
    assert messages[1]["session"]["meeting_link"] == row["meeting_link"]  # type: ignore[index]
    assert await inbox(database_url) == [
        {"message_id": e.message_id, "event_type": e.type, "outcome": "applied"}
        for e in sorted((approved, confirmed, cancelled), key=lambda e: e.message_id)
    ]


async def test_a_cancellation_first_and_a_late_approval_and_confirmation_announce_nothing(
    settings: Settings, database_url: str
) -> None:
    cancelled = cancel("bk_c2", 5, reason=None)
    late = [event("BookingApproved", "bk_c2", 0), event("BookingConfirmed", "bk_c2", 1)]

    await in_steps(settings, [cancelled], late[:1], late[1:])

    row = (await sessions(database_url))["bk_c2"]
    assert (row["status"], row["cancelled_at"], row["cancellation_reason"]) == ("CANCELLED", T0.replace(minute=5), None)
    assert await learners(database_url) == {("bk_c2", "student-bk_c2", "LEARNER", "CANCELLED")}
    assert await query(database_url, "SELECT message_id FROM outbox_messages") == []
    assert await read_json(settings, settings.output_topic, 0) == []
    assert [r["outcome"] for r in await inbox(database_url)] == ["applied"] * 3


async def test_a_redelivered_cancellation_changes_nothing_also_after_the_inbox_was_pruned(
    settings: Settings, database_url: str
) -> None:
    cancelled = cancel("bk_c3", 3)
    await in_steps(settings, [event("BookingApproved", "bk_c3", 0)], [cancelled], [cancelled])
    before = await snapshot(database_url)

    assert await execute(database_url, "DELETE FROM inbox_messages") == 2  # as `prune` would, later
    await in_steps(settings, [cancelled])

    after = await snapshot(database_url)
    for name in ("sessions", "participants", "reservations", "outbox"):
        assert after[name] == before[name], f"{name} rows changed"
    assert [r["message_id"] for r in before["inbox"]].count(cancelled.message_id) == 1
    assert kinds(await output_messages(settings, 2)) == announced_then_cancelled("bk_c3")


async def test_a_newer_snapshot_after_the_cancellation_moves_the_row_and_announces_nothing(
    settings: Settings, database_url: str
) -> None:
    newer = event("BookingConfirmed", "bk_c4", 9, title="Geometry", duration_minutes=90)

    await in_steps(settings, [event("BookingApproved", "bk_c4", 0)], [cancel("bk_c4", 3)], [newer])

    row = (await sessions(database_url))["bk_c4"]
    assert (row["status"], row["title"], row["duration_minutes"]) == ("CANCELLED", "Geometry", 90)
    assert row["snapshot_message_id"] == newer.message_id
    assert row["cancelled_at"] == T0.replace(minute=3)
    assert await learners(database_url) == {("bk_c4", "student-bk_c4", "LEARNER", "CANCELLED")}
    messages = await output_messages(settings, 2)
    assert kinds(messages) == announced_then_cancelled("bk_c4")
    assert messages[1]["session"]["title"] == "Algebra II"  # type: ignore[index]


async def test_a_cancellation_racing_its_confirmation_from_two_producers(
    kafka: KafkaHandle, settings: Settings, database_url: str
) -> None:
    confirmed, cancelled = event("BookingConfirmed", "bk_c5", 2), cancel("bk_c5", 2)
    await in_steps(settings, [event("BookingApproved", "bk_c5", 0)])

    produced = await publish_raced(kafka, settings, [confirmed, cancelled])
    assert len(produced.ends) == 1  # keyed by booking id: one partition, one order, whichever it is
    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()

    row = (await sessions(database_url))["bk_c5"]
    assert (row["status"], row["cancellation_message_id"]) == ("CANCELLED", cancelled.message_id)
    assert await learners(database_url) == {("bk_c5", "student-bk_c5", "LEARNER", "CANCELLED")}
    assert sorted(r["outcome"] for r in await inbox(database_url)) == ["applied"] * 3
    assert kinds(await output_messages(settings, 2)) == announced_then_cancelled("bk_c5")
