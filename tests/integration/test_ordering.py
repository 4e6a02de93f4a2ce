"""Newest snapshot wins: a stale event never regresses a session, a newer one emits SessionUpdated."""

from __future__ import annotations

from datetime import timedelta

from booking_sessions.settings import Settings
from consumer.ids import session_created_id, session_id, session_updated_id
from tests.integration.bookings import START, event
from tests.integration.harness import Produced, consume_all, execute, publish, query, read_json, service, snapshot


async def test_newer_snapshot_updates_and_a_stale_one_changes_nothing(settings: Settings, database_url: str) -> None:
    first = event("BookingApproved", "bk_1", 0)
    reschedule = event("BookingConfirmed", "bk_1", 10, scheduled_start=START + timedelta(hours=2), title="Moved")
    stale = event("BookingConfirmed", "bk_1", 5, title="Stale")  # occurred before the reschedule, arrives after
    produced = Produced()
    async with service(settings) as svc:
        for batch in ([first], [reschedule], [stale]):  # three batches: the guard must hold across transactions
            await publish(settings, batch, produced)
            await consume_all(svc, produced)
        await svc.relay.drain()

    [row] = await query(database_url, "SELECT * FROM live_sessions")
    assert row["title"] == "Moved"
    assert row["scheduled_start"] == START + timedelta(hours=2)
    assert (row["snapshot_occurred_at"], row["snapshot_message_id"]) == (
        reschedule.occurred_at,
        reschedule.message_id,
    )
    sid = session_id("bk_1")
    messages = [m["body"] for m in await read_json(settings, settings.output_topic, 2)]
    assert [(m["type"], m["message_id"]) for m in messages] == [
        ("SessionCreated", str(session_created_id(sid))),
        ("SessionUpdated", str(session_updated_id(sid, reschedule.message_id))),
    ]
    assert messages[1]["session"]["title"] == "Moved"
    assert messages[1]["session"]["scheduled_start"] == "2026-12-01T17:00:00Z"
    # The stale confirmation still confirms: its student is the session's learner.
    learners = await query(database_url, "SELECT user_id, role FROM session_participants")
    assert learners == [{"user_id": "student-bk_1", "role": "LEARNER"}]


async def test_old_event_redelivered_after_the_inbox_was_pruned_changes_nothing(
    settings: Settings, database_url: str
) -> None:
    old = event("BookingConfirmed", "bk_1", 0, title="Old")
    new = event("BookingConfirmed", "bk_1", 10, title="New")
    produced = Produced()
    await publish(settings, [old, new], produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()
    before = await snapshot(database_url)
    assert await execute(database_url, "DELETE FROM inbox_messages") == 2  # pruned, say after 30 days

    replay = settings.model_copy(update={"group_id": settings.group_id + ".replay"})
    async with service(replay) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()

    after = await snapshot(database_url)
    assert after["sessions"] == before["sessions"]  # same version, same updated_at: not even rewritten
    assert after["participants"] == before["participants"]
    assert after["reservations"] == before["reservations"]
    assert after["outbox"] == before["outbox"]
    assert [m["body"]["type"] for m in await read_json(settings, settings.output_topic, 1)] == ["SessionCreated"]
