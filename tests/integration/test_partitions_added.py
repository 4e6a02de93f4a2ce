"""Partitions added to the input topic while `run` is up are assigned and consumed without a restart: the consumer
reads the topic's metadata at least every ``METADATA_MAX_AGE_MS`` (aiokafka's own default is 5 minutes), the group
rebalances, and ``booking_sessions_input_partitions`` says how many there are now, for the alert on unowned ones."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from prometheus_client import CollectorRegistry

from booking_sessions import service as service_module
from booking_sessions.service import run_until
from booking_sessions.settings import Settings
from tests.integration.bookings import event
from tests.integration.harness import Produced, publish, query, service
from tests.servers.apache_kafka import ApacheKafka
from tests.servers.ladder import KafkaHandle
from tests.waiting import eventually


def counted(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("booking_sessions_input_partitions")


@pytest.mark.partitions(3)
async def test_partitions_added_to_the_input_topic_are_consumed_while_run_is_up(
    kafka: KafkaHandle, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(kafka.server, ApacheKafka):
        pytest.skip(f"{kafka.kind}: adding partitions and the group's rebalance are judged on Apache Kafka")
    monkeypatch.setattr(service_module, "METADATA_MAX_AGE_MS", 1_000)  # the suite's time, not the 30 s of `run`
    assert settings.kafka_bootstrap is not None
    await publish(settings, [event("BookingApproved", f"bk_a{i:02d}", 0) for i in range(30)], Produced())
    stop = asyncio.Event()
    async with service(settings) as svc:
        running = asyncio.create_task(run_until(svc, stop))
        try:

            async def three_owned() -> bool:
                assert len(svc.consumer.assignment()) == 3, f"assigned: {svc.consumer.assignment()}"
                return counted(svc.metrics.registry) == 3

            await eventually(three_owned, what="three partitions owned and counted", timeout_s=60)
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await admin.start()
            try:
                await admin.create_partitions({settings.input_topic: NewPartitions(6)})
            finally:
                await admin.close()
            later = Produced()
            await publish(settings, [event("BookingApproved", f"bk_b{i:02d}", 0) for i in range(60)], later)
            new = {partition for (_, partition) in later.ends if partition >= 3}
            assert new, f"the producer saw the new partitions: {later.ends}"

            async def six_owned_and_all_applied() -> bool:
                owned = sorted(tp.partition for tp in svc.consumer.assignment())
                assert owned == list(range(6)), f"assigned: {owned}"
                assert counted(svc.metrics.registry) == 6, "booking_sessions_input_partitions"
                [row] = await query(database_url, "SELECT count(*) AS n FROM live_sessions")
                assert row["n"] == 90, f"{row['n']} sessions of 90"
                return True

            await eventually(six_owned_and_all_applied, what="the new partitions owned and consumed", timeout_s=60)
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=60)
