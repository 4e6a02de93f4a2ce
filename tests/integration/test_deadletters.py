"""Every dead-letter reason this service produces: the record goes to the DLQ intact, its neighbours apply."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from booking_sessions.settings import Settings
from models.events import BookingEvent
from models.records import OutgoingRecord
from producer.bookings import as_record
from tests.integration.bookings import event
from tests.integration.dead_letters import (
    ORIGINAL_HEADERS,
    invalid,
    key_mismatch,
    read_dead_letters,
    refuse_in_database,
    too_large,
    unsupported_version,
    with_headers,
)
from tests.integration.harness import Produced, consume_all, publish, query, service

# (reason, records to publish; the last one is the dead letter, the inbox outcome of its message id)
CASES: dict[str, tuple[Callable[[str], list[OutgoingRecord]], str | None]] = {
    "invalid": (invalid, "dead_lettered"),
    "unsupported_version": (unsupported_version, "dead_lettered"),
    "key_mismatch": (key_mismatch, "dead_lettered"),
    "too_large": (too_large, None),  # never parsed: its message id is unknown
}


@pytest.mark.partitions(1)
@pytest.mark.parametrize("reason", sorted(CASES))
async def test_dead_letter_keeps_the_record_and_spares_its_neighbours(
    reason: str, settings: Settings, database_url: str
) -> None:
    make, inbox_outcome = CASES[reason]
    bad = with_headers(make(settings.input_topic)[-1])
    before, after = event("BookingApproved", "bk_before", 0), event("BookingApproved", "bk_after", 0)
    produced = Produced()
    await publish(
        settings, [as_record(before, settings.input_topic), bad, as_record(after, settings.input_topic)], produced
    )

    async with service(settings) as svc:
        await consume_all(svc, produced)

    sessions = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    assert [s["booking_request_id"] for s in sessions] == ["bk_after", "bk_before"]
    [dead] = await read_dead_letters(settings)
    assert dead.key == bad.key
    assert dead.value == bad.value
    headers = dead.headers
    assert headers[: len(ORIGINAL_HEADERS)] == ORIGINAL_HEADERS
    added = dict(headers[len(ORIGINAL_HEADERS) :])
    assert sorted(added) == sorted(
        ["dlq-reason", "dlq-error", "dlq-source-topic", "dlq-source-partition", "dlq-source-offset", "dlq-failed-at"]
    )
    assert added["dlq-reason"] == reason.encode()
    assert added["dlq-source-topic"] == settings.input_topic.encode()
    assert added["dlq-source-partition"] == b"0"
    assert added["dlq-source-offset"] == b"1"
    assert 0 < len(added["dlq-error"] or b"") <= 1024
    failed_at = datetime.fromisoformat((added["dlq-failed-at"] or b"").decode().replace("Z", "+00:00"))
    assert failed_at.tzinfo is not None and abs((datetime.now(UTC) - failed_at).total_seconds()) < 300
    outcomes = await query(database_url, 'SELECT booking_id, outcome, dlq_reason FROM inbox_messages ORDER BY "offset"')
    expected = [{"booking_id": "bk_before", "outcome": "applied", "dlq_reason": None}]
    if inbox_outcome is not None:
        expected.append({"booking_id": "bk_bad", "outcome": inbox_outcome, "dlq_reason": reason})
    expected.append({"booking_id": "bk_after", "outcome": "applied", "dlq_reason": None})
    assert outcomes == expected


def original_and_forged() -> tuple[BookingEvent, BookingEvent]:
    """A confirmation and a copy under its message id with another title: a message_id_conflict."""
    original = event("BookingConfirmed", "bk_conflict", 1, title="Algebra II")
    return original, original.model_copy(update={"booking": original.booking.model_copy(update={"title": "Changed"})})


@pytest.mark.partitions(1)
async def test_same_message_id_with_another_payload_is_a_conflict(settings: Settings, database_url: str) -> None:
    original, forged = original_and_forged()
    produced = Produced()
    await publish(settings, [original], produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
        # A second batch: the conflict is found against the inbox, not within one batch.
        conflicting = with_headers(as_record(forged, settings.input_topic))
        await publish(settings, [conflicting, event("BookingApproved", "bk_after", 0)], produced)
        await consume_all(svc, produced)

    [dead] = await read_dead_letters(settings)
    assert dead.value == conflicting.value and dead.key == b"bk_conflict"
    assert dict(dead.headers)["dlq-reason"] == b"message_id_conflict"
    [session] = await query(database_url, "SELECT title FROM live_sessions WHERE booking_request_id = 'bk_conflict'")
    assert session["title"] == "Algebra II"  # the forged copy changed nothing
    inbox = await query(database_url, 'SELECT message_id, outcome FROM inbox_messages ORDER BY "offset"')
    assert [r["outcome"] for r in inbox] == ["applied", "applied"]
    assert inbox[0]["message_id"] == original.message_id


@pytest.mark.partitions(1)
async def test_conflict_within_one_batch(settings: Settings, database_url: str) -> None:
    original, forged = original_and_forged()
    produced = Produced()
    await publish(settings, [original, forged, original], produced)
    async with service(settings) as svc:
        result_offsets = await consume_all(svc, produced)
    assert result_offsets == produced.ends
    [dead] = await read_dead_letters(settings)
    assert dict(dead.headers)["dlq-reason"] == b"message_id_conflict"
    assert dict(dead.headers)["dlq-source-offset"] == b"1"
    [session] = await query(database_url, "SELECT title FROM live_sessions")
    assert session["title"] == "Algebra II"


@pytest.mark.partitions(1)
async def test_a_copy_of_a_processed_message_is_a_duplicate_even_after_a_changed_one_in_its_batch(
    settings: Settings, database_url: str
) -> None:
    # The inbox holds the original. One later batch: a changed copy first, then an exact copy. The exact copy is
    # a duplicate of what the inbox recorded (before the fix it was judged against the changed copy, the batch's
    # first, and dead-lettered as a conflict too).
    original, forged = original_and_forged()
    produced = Produced()
    await publish(settings, [original], produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
    await publish(settings, [forged, original], produced)  # while stopped: both land in one batch
    async with service(settings) as svc:
        await consume_all(svc, produced)
        duplicates = svc.metrics.registry.get_sample_value("booking_sessions_events_duplicate_total")

    [dead] = await read_dead_letters(settings)
    assert dict(dead.headers)["dlq-reason"] == b"message_id_conflict"
    assert dict(dead.headers)["dlq-source-offset"] == b"1"  # the changed copy only
    assert duplicates == 1
    [session] = await query(database_url, "SELECT title FROM live_sessions")
    assert session["title"] == "Algebra II"


@pytest.mark.partitions(1)
async def test_poison_found_only_by_postgresql_is_isolated_and_dead_lettered(
    settings: Settings, database_url: str
) -> None:
    await refuse_in_database(database_url, "bk_poison")
    poison = event("BookingConfirmed", "bk_poison", 1)
    neighbours = [event("BookingApproved", f"bk_{i}", 0) for i in range(7)]
    records = [as_record(e, settings.input_topic) for e in [*neighbours[:3], poison, *neighbours[3:]]]
    records[3] = with_headers(records[3])
    produced = Produced()
    await publish(settings, records, produced)

    async with service(settings) as svc:
        await consume_all(svc, produced)

    sessions = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    assert [s["booking_request_id"] for s in sessions] == [f"bk_{i}" for i in range(7)]
    [dead] = await read_dead_letters(settings)
    assert dead.value == records[3].value and dead.key == b"bk_poison"
    headers = dict(dead.headers)
    assert headers["dlq-reason"] == b"processing_error"
    assert headers["dlq-source-offset"] == b"3"
    assert headers["dlq-error"] == b"PostgreSQL refused it (SQLSTATE P0001): booking bk_poison refused by a trigger"
    [inbox] = await query(database_url, "SELECT outcome, dlq_reason FROM inbox_messages WHERE booking_id = 'bk_poison'")
    assert inbox == {"outcome": "dead_lettered", "dlq_reason": "processing_error"}
