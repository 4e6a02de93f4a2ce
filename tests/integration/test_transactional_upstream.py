"""An upstream that publishes in Kafka transactions: what it aborted was never published, so it changes nothing;
what it committed applies, as records without a transaction do (a newcomer's find: with aiokafka's default
isolation level, read_uncommitted, an aborted BookingConfirmed created a session and announced it)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from booking_sessions.settings import Settings
from producer.bookings import as_record
from tests.integration.bookings import event
from tests.integration.harness import Produced, consume_all, publish, query, service
from tests.servers.ladder import KafkaHandle


async def send_in_transaction(settings: Settings, booking: str, *, commit: bool) -> None:
    """One BookingConfirmed of ``booking`` in a transaction of its own, then committed or aborted."""
    assert settings.kafka_bootstrap is not None
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"upstream-{booking}", request_timeout_ms=30_000
    )
    await producer.start()
    try:
        record = as_record(event("BookingConfirmed", booking, 0), settings.input_topic)
        await producer.begin_transaction()
        sent = await producer.send(record.topic, record.value, key=record.key, headers=list(record.headers))
        await sent  # in the log, not yet committed
        if commit:
            await producer.commit_transaction()
        else:
            await producer.abort_transaction()
    finally:
        await producer.stop()


@pytest.mark.partitions(1)
async def test_an_aborted_event_changes_nothing_and_a_committed_one_applies(
    settings: Settings, database_url: str, kafka: KafkaHandle
) -> None:
    if kafka.kind.startswith("tansu"):
        pytest.skip("Tansu refuses InitProducerId: no transactional producer to test with")
    await send_in_transaction(settings, "bk_aborted", commit=False)
    await send_in_transaction(settings, "bk_committed", commit=True)
    produced = Produced()  # a plain record last: the offsets committed then pass both transaction markers
    await publish(settings, [event("BookingConfirmed", "bk_plain", 0)], produced)

    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()

    sessions = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    inbox = await query(database_url, "SELECT booking_id FROM inbox_messages ORDER BY 1")
    outbox = await query(database_url, "SELECT key FROM outbox_messages ORDER BY 1")
    assert [r["booking_request_id"] for r in sessions] == ["bk_committed", "bk_plain"]
    assert [r["booking_id"] for r in inbox] == ["bk_committed", "bk_plain"]
    assert [r["key"] for r in outbox] == ["bk_committed", "bk_plain"]
