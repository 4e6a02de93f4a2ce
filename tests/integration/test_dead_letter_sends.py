"""Dead letters the DLQ producer once could not send, and the partition they stopped: one with neither key nor
value (a keyless tombstone's), and the ones after a copy the DLQ refused for good (CONTRACT "Dead letters": a poison
message never stops the partition)."""

from __future__ import annotations

import json

import pytest

from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from models.records import OutgoingRecord
from tests.integration.harness import Produced, consume_all, publish, service
from tests.integration.poison_records import (
    applied_bookings,
    body,
    dlq_headers_of_one,
    good,
    publish_raw,
    without_failed_at,
)
from tests.servers.ladder import KafkaHandle


@pytest.mark.partitions(1)
async def test_a_keyless_tombstone_is_dead_lettered_as_it_is_and_its_neighbours_apply(
    settings: Settings, database_url: str
) -> None:
    # Neither key nor value: Kafka takes it, and so must the DLQ (aiokafka's send() refuses one; before the fix the
    # service exited on it at every start, the partition stuck).
    before, after = good(settings, "bk_before"), good(settings, "bk_after")
    await publish_raw(
        settings,
        [(b"bk_before", before.value, []), (None, None, [("h", b"1")]), (b"bk_after", after.value, [])],
        one_batch=False,
    )
    produced = Produced()
    produced.add(settings.input_topic, 0, 2)  # the last offset of the three

    async with service(settings) as svc:
        await consume_all(svc, produced)
        await publish(settings, [good(settings, "bk_later")], produced)
        await consume_all(svc, produced)

    assert await applied_bookings(database_url) == ["bk_after", "bk_before", "bk_later"]
    key, value, headers = await dlq_headers_of_one(settings)
    assert (key, value) == (None, None)
    assert without_failed_at(headers) == [
        ("h", b"1"),
        ("dlq-reason", b"invalid"),
        ("dlq-error", b"value is empty (tombstone)"),
        ("dlq-source-topic", settings.input_topic.encode()),
        ("dlq-source-partition", b"0"),
        ("dlq-source-offset", b"1"),
    ]


@pytest.mark.partitions(1)
async def test_a_dead_letter_refused_for_good_does_not_stop_the_ones_after_it(
    settings: Settings, database_url: str, kafka: KafkaHandle
) -> None:
    # Two dead letters of one key in one batch: a small one the DLQ takes, then one too large for it. Before the
    # fix the idempotent producer numbered the refused batch, the broker refused every later batch of that DLQ
    # partition as out of order (OutOfOrderSequenceNumber), and the batch was retried for ever.
    small = json.dumps(body("bk_big", booking__duration_minutes=0)).encode()
    padded = body("bk_big")
    padded["padding"] = ""
    padded["padding"] = "x" * (1_048_400 - len(json.dumps(padded).encode()))
    big = json.dumps(padded).encode()
    produced = Produced()
    records = [
        good(settings, "bk_before"),
        OutgoingRecord(settings.input_topic, b"bk_big", small, ()),
        OutgoingRecord(settings.input_topic, b"bk_big", big, ()),
        good(settings, "bk_after"),
    ]
    await publish(settings, records, produced)

    async with service(settings) as svc:
        await consume_all(svc, produced)

    assert await applied_bookings(database_url) == ["bk_after", "bk_before"]
    assert settings.kafka_bootstrap is not None
    dead = await read_topic(settings.kafka_bootstrap, settings.dlq_topic, expected=2)
    reasons = [dict(d.headers)["dlq-reason"] for d in dead]
    assert reasons == [b"invalid", b"too_large"]
    assert dead[0].value == small
    # Tansu takes any size: the copy went whole there.
    assert dead[1].value == (big if kafka.kind.startswith("tansu") else None)
