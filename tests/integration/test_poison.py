"""Poison at every layer moves aside (issue 12): a record the Kafka client cannot read, a dead letter the DLQ topic
refuses, and values only PostgreSQL would have refused. Each is published between two good records on one
partition; the good ones are applied, the poison is on the DLQ with exact headers, and the loop goes on."""

from __future__ import annotations

import hashlib
import json

import pytest

from booking_sessions.settings import Settings
from models.records import OutgoingRecord
from tests.integration.harness import Produced, consume_all, publish, query, service
from tests.integration.operator_cli import invoke_json
from tests.integration.poison_records import (
    applied_bookings,
    body,
    dlq_headers_of_one,
    good,
    publish_raw,
    without_failed_at,
)
from tests.raw_headers import raw_name
from tests.servers.ladder import KafkaHandle

OUTSIDE_UTC = (
    b"occurred_at: Value error, must be after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z"
    b" once converted to UTC"
)
DLQ_NAMES = ["dlq-reason", "dlq-error", "dlq-source-topic", "dlq-source-partition", "dlq-source-offset"]


async def publish_unreadable_between_two(settings: Settings, *, one_batch: bool = True) -> bytes:
    """Issue 12's record: a header name of bytes 74 72 FF 63 65, valid JSON, key bk_hkey; good records around it.
    Returns its value."""
    before, after = good(settings, "bk_before"), good(settings, "bk_after")
    bad_value = json.dumps(body("bk_hkey")).encode()
    await publish_raw(
        settings,
        [
            (b"bk_before", before.value or b"", []),
            (b"bk_hkey", bad_value, [("ok", b"1"), (raw_name(b"tr\xffce"), b"v"), ("null", None)]),
            (b"bk_after", after.value or b"", []),
        ],
        one_batch=one_batch,
    )
    return bad_value


@pytest.mark.partitions(1)
async def test_a_header_name_that_is_not_utf8_is_dead_lettered_undecodable_and_its_neighbours_apply(
    settings: Settings, database_url: str
) -> None:
    bad_value = await publish_unreadable_between_two(settings)
    produced = Produced()
    produced.add(settings.input_topic, 0, 2)

    async with service(settings) as svc:
        await consume_all(svc, produced)  # before the fix: UnicodeDecodeError out of getmany, on every start
        # Still consuming: a record after it is applied by the same loop.
        await publish(settings, [good(settings, "bk_later")], produced)
        await consume_all(svc, produced)

    assert await applied_bookings(database_url) == ["bk_after", "bk_before", "bk_later"]
    key, value, headers = await dlq_headers_of_one(settings)
    assert (key, value) == (b"bk_hkey", bad_value)
    assert without_failed_at(headers) == [
        ("ok", b"1"),
        ("null", None),
        ("dlq-reason", b"undecodable"),
        ("dlq-error", b"header 1 name is not UTF-8: b'tr\\xffce' (left out of the dead letter)"),
        ("dlq-source-topic", settings.input_topic.encode()),
        ("dlq-source-partition", b"0"),
        ("dlq-source-offset", b"1"),
    ]
    inbox = await query(database_url, 'SELECT booking_id, outcome FROM inbox_messages ORDER BY "offset"')
    assert [(r["booking_id"], r["outcome"]) for r in inbox] == [
        ("bk_before", "applied"),
        ("bk_after", "applied"),
        ("bk_later", "applied"),
    ]


@pytest.mark.partitions(1)
async def test_replay_reads_past_a_record_the_client_cannot_read(settings: Settings, database_url: str) -> None:
    await publish_unreadable_between_two(settings, one_batch=False)

    summary = await invoke_json(settings, "replay", "--group", f"replay-{settings.group_id}")

    assert (summary["records"], summary["applied"], summary["dead_lettered"]) == (3, 2, {"undecodable": 1})
    assert summary["partitions"]["0"]["reached"] == 3
    assert await applied_bookings(database_url) == ["bk_after", "bk_before"]
    key, _, headers = await dlq_headers_of_one(settings)
    assert key == b"bk_hkey"
    assert dict(headers)["dlq-reason"] == b"undecodable"


# (value changes, dlq-error, inbox row of the poison: None when its message id could not be read)
STORABLE_CASES = {
    "unknown-type-with-u0000": (
        {"type": "BookingCancelled\u0000"},
        b"type: Value error, must not contain control characters (U+0000 at character 16)",
        "dead_lettered",  # its message id is readable: recorded with the dead letter
    ),
    "title-with-u0000": (
        {"booking__title": "Algebra\u0000II"},
        b"booking.title: Value error, must not contain control characters (U+0000 at character 7)",
        "dead_lettered",
    ),
    "occurred_at-year-10000-in-utc": ({"occurred_at": "9999-12-31T23:59:59-12:00"}, OUTSIDE_UTC, "dead_lettered"),
    # asyncpg would have stored it as -infinity and read it back naive: every later event of the booking failed.
    "occurred_at-first-instant": ({"occurred_at": "0001-01-01T00:00:00Z"}, OUTSIDE_UTC, "dead_lettered"),
}


@pytest.mark.partitions(1)
@pytest.mark.parametrize("case", sorted(STORABLE_CASES))
async def test_what_postgresql_would_refuse_is_invalid_naming_the_field(
    case: str, settings: Settings, database_url: str
) -> None:
    changes, error, inbox_outcome = STORABLE_CASES[case]
    value = json.dumps(body("bk_bad", **changes)).encode()
    assert b"\\u0000" in value or b"9999" in value or b"0001" in value  # JSON's own escape, as a producer sends it
    bad = OutgoingRecord(settings.input_topic, b"bk_bad", value, (("null", None),))
    produced = Produced()
    await publish(settings, [good(settings, "bk_before"), bad, good(settings, "bk_after")], produced)

    async with service(settings) as svc:
        await consume_all(svc, produced)

    assert await applied_bookings(database_url) == ["bk_after", "bk_before"]
    key, dead_value, headers = await dlq_headers_of_one(settings)
    assert (key, dead_value) == (b"bk_bad", value)
    assert without_failed_at(headers) == [
        ("null", None),
        ("dlq-reason", b"invalid"),
        ("dlq-error", error),
        ("dlq-source-topic", settings.input_topic.encode()),
        ("dlq-source-partition", b"0"),
        ("dlq-source-offset", b"1"),
    ]
    inbox = await query(database_url, 'SELECT booking_id, outcome, dlq_reason FROM inbox_messages ORDER BY "offset"')
    expected: list[tuple[str, str, str | None]] = [("bk_before", "applied", None), ("bk_after", "applied", None)]
    if inbox_outcome is not None:
        expected.insert(1, ("bk_bad", inbox_outcome, "invalid"))
    assert [(r["booking_id"], r["outcome"], r["dlq_reason"]) for r in inbox] == expected


@pytest.mark.partitions(1)
@pytest.mark.parametrize("key", [b"bk_big", None], ids=["keyed", "keyless"])
async def test_a_dead_letter_too_large_for_the_dlq_goes_without_its_value_and_the_partition_moves_on(
    key: bytes | None, settings: Settings, database_url: str, kafka: KafkaHandle
) -> None:
    # Issue 12's case: a valid event of 1,048,400 bytes fits the broker's default 1 MiB limit on the input topic;
    # its DLQ copy, with the dlq-* headers added, does not.
    padded = body("bk_big")
    padded["padding"] = ""
    padded["padding"] = "x" * (1_048_400 - len(json.dumps(padded).encode()))
    value = json.dumps(padded).encode()
    assert len(value) == 1_048_400
    # Keyless, its copy without the value has neither key nor value (before the fix: an exit at every start).
    big = OutgoingRecord(settings.input_topic, key, value, (("traceparent", b"00-abc-01"), ("null", None)))
    produced = Produced()
    await publish(settings, [good(settings, "bk_before"), big, good(settings, "bk_after")], produced)

    async with service(settings) as svc:
        await consume_all(svc, produced)  # before the fix: "PostgreSQL rejected it", then exit 1 on every start
        refused = svc.metrics.registry.get_sample_value(
            "booking_sessions_dead_letters_refused_total", {"sent_as": "value_omitted"}
        )

    assert await applied_bookings(database_url) == ["bk_after", "bk_before"]
    dead_key, dead_value, headers = await dlq_headers_of_one(settings)
    original = [
        ("traceparent", b"00-abc-01"),
        ("null", None),
        ("dlq-reason", b"too_large"),
        ("dlq-error", f"value is 1048400 bytes, limit is {settings.max_message_bytes}".encode()),
        ("dlq-source-topic", settings.input_topic.encode()),
        ("dlq-source-partition", b"0"),
        ("dlq-source-offset", b"1"),
    ]
    if kafka.kind.startswith("tansu"):
        # Tansu enforces no message size limit: the copy is taken whole, which is what the contract wants first.
        assert (refused, dead_key, dead_value, without_failed_at(headers)) == (0, key, value, original)
        return
    assert refused == 1
    assert (dead_key, dead_value) == (key, None)
    assert without_failed_at(headers) == [
        *original,
        ("dlq-value-omitted", b"1048400"),
        ("dlq-value-sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
