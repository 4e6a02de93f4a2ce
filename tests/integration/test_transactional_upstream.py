"""An upstream that publishes in Kafka transactions: what it aborted was never published, so it changes nothing;
what it committed applies, as records without a transaction do (a newcomer's find: with aiokafka's default
isolation level, read_uncommitted, an aborted BookingConfirmed created a session and announced it)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from booking_sessions.settings import Settings
from producer.bookings import as_record
from tests.integration.bookings import event
from tests.integration.harness import Produced, committed_offsets, consume_all, publish, query, service
from tests.servers.ladder import KafkaHandle
from tests.waiting import eventually


def needs_transactions(kafka: KafkaHandle) -> None:
    if kafka.kind.startswith("tansu"):
        pytest.skip("Tansu refuses InitProducerId: no transactional producer to test with")


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
    needs_transactions(kafka)
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


async def end_offset(settings: Settings, partition: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(settings.input_topic, partition)
        ends: dict[TopicPartition, int] = await consumer.end_offsets([tp])
        return ends[tp]
    finally:
        await consumer.stop()


@pytest.mark.partitions(1)
async def test_a_quiet_transactional_upstream_leaves_no_lag(
    settings: Settings, database_url: str, kafka: KafkaHandle
) -> None:
    """The log ends with a transaction marker (an abort's, after a commit's): ``run`` commits past it once the
    upstream is quiet, so the group's lag is 0, not 1 for ever (a newcomer's find: /healthz went red, "stalled")."""
    needs_transactions(kafka)
    await send_in_transaction(settings, "bk_committed", commit=True)
    await send_in_transaction(settings, "bk_aborted", commit=False)
    end = await end_offset(settings, 0)
    assert end == 4, "a record and its commit marker, a record and its abort marker"
    partition = (settings.input_topic, 0)

    async with service(settings) as svc:
        stop = asyncio.Event()
        running = asyncio.create_task(svc.loop.run(stop))
        try:

            async def caught_up() -> bool:
                assert (await committed_offsets(settings, [partition]))[partition] == end
                await svc.sampler.sample_lag()
                assert svc.metrics.lag_total == 0, svc.metrics.partition_lag
                return True

            await eventually(caught_up, what="the group committed past the last marker", timeout_s=30)
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=30)

    sessions = await query(database_url, "SELECT booking_request_id FROM live_sessions")
    assert [r["booking_request_id"] for r in sessions] == ["bk_committed"]
