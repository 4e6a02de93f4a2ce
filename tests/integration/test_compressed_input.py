"""Records as producers compress them: every codec Kafka has (a Java producer's ``compression.type``) is read and
applied like uncompressed records. Before the codecs were installed (cramjam, aiokafka's lz4/snappy/zstd extras), a
snappy, lz4 or zstd batch was one unreadable record, whose dead letter then stopped the service."""

from __future__ import annotations

import pytest

from booking_sessions.settings import Settings
from producer.bookings import as_record
from producer.publish import Publisher
from tests.integration.bookings import event
from tests.integration.harness import Produced, consume_all, query, service


@pytest.mark.partitions(1)
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_batches_are_applied_like_any_other(codec: str, settings: Settings, database_url: str) -> None:
    assert settings.kafka_bootstrap is not None
    bookings = [f"bk_{codec}_{i}" for i in range(5)]
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="compressing", compression_type=codec)
    produced = Produced()
    try:
        # One send_all: the five records leave in one compressed batch.
        records = [as_record(event("BookingConfirmed", b, 0), settings.input_topic) for b in bookings]
        for metadata in await publisher.send_all(records):
            produced.add(metadata.topic, metadata.partition, metadata.offset)
    finally:
        await publisher.stop()

    async with service(settings) as svc:
        await consume_all(svc, produced)

    rows = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    assert [r["booking_request_id"] for r in rows] == bookings
    inbox = await query(database_url, "SELECT outcome FROM inbox_messages")
    assert [r["outcome"] for r in inbox] == ["applied"] * 5  # nothing dead-lettered: no batch left unread
