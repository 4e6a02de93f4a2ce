"""`booking-sessions outbox republish`: chosen rows go out again byte for byte under their original message ids,
from this process (--relay) or through the running service's relay; a dry run and a missing filter change nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from consumer.ids import session_id
from producer.relay import OutboxRelay
from tests.integration.bookings import event
from tests.integration.harness import Produced, consume_all, query, relay_of_the_running_service, service
from tests.integration.operator_cli import assert_one_line_error, invoke, publish_one_by_one


async def three_bookings_one_rescheduled(settings: Settings) -> list[Any]:
    """bk_1..bk_3 created and published, then bk_1 updated and published: four messages on the output topic."""
    first, later = Produced(), Produced()
    async with service(settings) as svc:
        await publish_one_by_one(settings, [event("BookingApproved", f"bk_{i}", 0) for i in (1, 2, 3)], first)
        await consume_all(svc, first)
        await svc.relay.drain()
        await publish_one_by_one(settings, [event("BookingConfirmed", "bk_1", 5, title="Geometry")], later)
        await consume_all(svc, later)
        await svc.relay.drain()
    return await output(settings, 4)


async def output(settings: Settings, expected: int) -> list[Any]:
    records = await read_topic(settings.kafka_bootstrap or "", settings.output_topic, expected=expected)
    assert len(records) == expected
    return records


async def unpublished(database_url: str) -> list[str]:
    rows = await query(database_url, "SELECT key, payload FROM outbox_messages WHERE published_at IS NULL ORDER BY id")
    return [f"{r['key']}:{'Created' if 'SessionCreated' in r['payload'] else 'Updated'}" for r in rows]


async def test_republish_by_booking_with_relay_resends_the_same_bytes_and_message_ids(
    settings: Settings, database_url: str
) -> None:
    originals = await three_bookings_one_rescheduled(settings)

    result = await invoke(settings, "outbox", "republish", "--booking", "bk_1", "--relay")

    assert result.exit_code == 0, result.output
    assert "2 rows chosen: 2 handed back to the relay; 2 published from here" in result.stdout
    assert "SessionCreated" in result.stdout and "SessionUpdated" in result.stdout
    first_time = [(r.value, r.headers) for r in originals if r.key == b"bk_1"]
    assert [json.loads(value)["type"] for value, _ in first_time] == ["SessionCreated", "SessionUpdated"]
    bk_1 = [(r.value, r.headers) for r in await output(settings, 6) if r.key == b"bk_1"]  # one partition: in order
    assert bk_1 == first_time * 2
    assert await unpublished(database_url) == []


async def test_republish_by_type_and_time_queues_rows_for_the_running_relay(
    settings: Settings, database_url: str
) -> None:
    await three_bookings_one_rescheduled(settings)
    dry = await invoke(settings, "outbox", "republish", "--type", "SessionCreated", "--since", "1h", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: 3 rows chosen + 1 later rows of the same bookings; nothing changed" in dry.stdout
    assert await unpublished(database_url) == []

    exact = await invoke(settings, "outbox", "republish", "--type", "SessionCreated", "--exact", "--dry-run")
    assert "dry run: 3 rows chosen; nothing changed" in exact.stdout, exact.output
    by_session = await invoke(settings, "outbox", "republish", "--session", str(session_id("bk_2")), "--dry-run")
    assert "dry run: 1 rows chosen; nothing changed" in by_session.stdout and "bk_2" in by_session.stdout

    queued = await invoke(settings, "outbox", "republish", "--type", "SessionCreated", "--since", "1h")
    assert queued.exit_code == 0, queued.output
    assert "3 rows chosen + 1 later rows of the same bookings: 4 handed back to the outbox relay" in queued.stdout
    # The relay sends by id: the three SessionCreated (one batch, any order among them), then bk_1's update.
    waiting = await unpublished(database_url)
    assert sorted(waiting[:3]) == ["bk_1:Created", "bk_2:Created", "bk_3:Created"] and waiting[3] == "bk_1:Updated"
    assert await relay_of_the_running_service(settings, database_url) == 4
    sent = await output(settings, 8)
    types = {
        key: [json.loads(r.value)["type"][7:] for r in sent if r.key == key] for key in (b"bk_1", b"bk_2", b"bk_3")
    }
    assert types == {b"bk_1": ["Created", "Updated"] * 2, b"bk_2": ["Created"] * 2, b"bk_3": ["Created"] * 2}
    assert await unpublished(database_url) == []


async def test_republish_refuses_without_a_filter_and_on_bad_arguments(settings: Settings) -> None:
    assert_one_line_error(await invoke(settings, "outbox", "republish"), "choose rows")
    assert_one_line_error(await invoke(settings, "outbox", "republish", "--type", "Foo"), "--type Foo: unknown")
    assert_one_line_error(await invoke(settings, "outbox", "republish", "--session", "x"), "UUIDs")
    assert_one_line_error(await invoke(settings, "outbox", "republish", "--since", "yesterday"), "'yesterday'")


async def test_a_relay_failure_after_the_hand_back_says_the_rows_wait_in_the_outbox(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newcomer's find: a statement timeout while publishing (after the rows were handed back) printed only
    # "database error: canceling statement due to statement timeout", not what it left.
    await three_bookings_one_rescheduled(settings)

    async def times_out(self: OutboxRelay) -> int:
        raise DBAPIError("SELECT ...", None, Exception("canceling statement due to statement timeout"))

    monkeypatch.setattr(OutboxRelay, "run_once", times_out)
    result = await invoke(settings, "outbox", "republish", "--booking", "bk_1", "--relay")

    assert_one_line_error(
        result, "2 rows were handed back to the relay, but publishing them from here stopped: database error"
    )
    assert "they wait in the outbox for the running service's relay" in result.stderr
    assert await unpublished(database_url) == ["bk_1:Created", "bk_1:Updated"]
