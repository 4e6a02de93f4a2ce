"""Two events of one booking less than a microsecond apart (RFC 3339 allows any number of fraction digits): the newer
snapshot wins and the earlier cancellation stays, as the contract orders them by occurred_at, in either arrival
order, in one batch or in two. Before, timestamptz kept microseconds, the two instants tied, and the message ids
decided: a newcomer's find (the newer snapshot with the smaller id lost; so did the earlier cancellation)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import pytest

from booking_sessions.settings import Settings
from models.events import BookingEvent
from models.records import OutgoingRecord
from producer.bookings import as_record
from tests.integration.bookings import event
from tests.integration.harness import Produced, consume_all, publish, query, read_json, service

SMALL_ID, LARGE_ID = uuid.UUID(int=1), uuid.UUID(int=2)
MOMENT = "2026-11-24T10:30:00.000000"  # the microsecond both events share


def at(item: BookingEvent, occurred_at: str, settings: Settings) -> OutgoingRecord:
    """``item`` as a record whose occurred_at is written as ``occurred_at`` (more digits than a datetime holds)."""
    record = as_record(item, settings.input_topic)
    assert record.value is not None
    fields = json.loads(record.value)
    fields["occurred_at"] = occurred_at
    return OutgoingRecord(record.topic, record.key, json.dumps(fields).encode())


async def apply_in(settings: Settings, batches: Sequence[Sequence[OutgoingRecord]]) -> None:
    produced = Produced()
    async with service(settings) as svc:
        for batch in batches:  # each its own batch: the guards must hold across transactions too
            await publish(settings, batch, produced)
            await consume_all(svc, produced)
        await svc.relay.drain()


@pytest.mark.parametrize("arrival", ["newer first", "newer last", "one batch"])
async def test_the_newer_snapshot_wins_when_it_is_less_than_a_microsecond_newer_and_has_the_smaller_id(
    arrival: str, settings: Settings, database_url: str
) -> None:
    approval = as_record(event("BookingApproved", "bk_ns", 0), settings.input_topic)
    older = at(event("BookingConfirmed", "bk_ns", 30, title="Older", message_id=LARGE_ID), MOMENT + "000Z", settings)
    newer = at(event("BookingConfirmed", "bk_ns", 30, title="Newer", message_id=SMALL_ID), MOMENT + "400Z", settings)
    pairs = {"newer first": [[newer], [older]], "newer last": [[older], [newer]], "one batch": [[older, newer]]}

    await apply_in(settings, [[approval], *pairs[arrival]])

    [row] = await query(
        database_url, "SELECT title, snapshot_message_id, snapshot_occurred_at_beyond_us AS beyond FROM live_sessions"
    )
    assert row == {
        "title": "Newer",
        "snapshot_message_id": SMALL_ID,
        "beyond": "4",
    }  # before: "Older", its id, no column
    messages = [m["body"] for m in await read_json(settings, settings.output_topic, 1)]
    assert messages[-1]["session"]["title"] == "Newer"  # what the video service ends with


@pytest.mark.parametrize("arrival", ["earlier first", "earlier last", "one batch"])
async def test_the_earlier_cancellation_stays_when_it_is_less_than_a_microsecond_earlier_and_has_the_larger_id(
    arrival: str, settings: Settings, database_url: str
) -> None:
    approval = as_record(event("BookingApproved", "bk_ns", 0), settings.input_topic)
    cancel = "BookingCancelled"
    earlier = at(
        event(cancel, "bk_ns", 30, cancellation_reason="earlier", message_id=LARGE_ID), MOMENT + "050Z", settings
    )
    later = at(event(cancel, "bk_ns", 30, cancellation_reason="later", message_id=SMALL_ID), MOMENT + "1Z", settings)
    pairs = {
        "earlier first": [[earlier], [later]],
        "earlier last": [[later], [earlier]],
        "one batch": [[later, earlier]],
    }

    await apply_in(settings, [[approval], *pairs[arrival]])

    [row] = await query(
        database_url,
        "SELECT status, cancellation_reason, cancellation_message_id, cancelled_at_beyond_us AS beyond"
        " FROM live_sessions",
    )
    assert row == {"status": "CANCELLED", "cancellation_reason": "earlier", "cancellation_message_id": LARGE_ID,
                   "beyond": "05"}  # fmt: skip
    reservations = await query(
        database_url, "SELECT count(*) AS n FROM session_reservations WHERE status <> 'CANCELLED'"
    )
    assert reservations == [{"n": 0}]
