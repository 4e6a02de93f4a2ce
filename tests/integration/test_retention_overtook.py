"""Retention overtook the group: records published while the service was stopped were deleted before it read them
(retention.ms shorter than the outage, or delete-records). They are lost to this service whatever it does; what it
must not do is skip them without a word. The reset is logged as a warning that says what it means."""

from __future__ import annotations

import asyncio
import signal

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from booking_sessions.settings import Settings
from tests.integration.harness import Produced, committed_to_the_end, publish
from tests.integration.watched_runs import HANG_S, watched_run
from tests.integration.workloads import all_applied_and_published, workload
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]


@pytest.mark.partitions(1)
async def test_records_deleted_before_the_group_read_them_are_reported_not_skipped_quietly(
    settings: Settings, database_url: str
) -> None:
    first, unread = workload(20), workload(30, seed=2)[60:]
    produced = Produced()
    await publish(settings, first, produced)
    async with watched_run(settings) as run:
        await all_applied_and_published(database_url, first, timeout_s=HANG_S)
        [(topic, partition)] = produced.ends
        await eventually(
            lambda: committed_to_the_end(settings, produced), what="the first records committed", timeout_s=HANG_S
        )
        run.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(run.process.wait(), timeout=30) == 0
    committed_before = produced.ends[(topic, partition)]
    await publish(settings, unread, produced)  # while the service is stopped
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:  # as retention would: every record up to the end is gone
        await admin.delete_records(
            {TopicPartition(topic, partition): RecordsToDelete(produced.ends[(topic, partition)])}
        )
    finally:
        await admin.close()
    async with watched_run(settings) as run:

        async def reported() -> bool:
            warnings = [line for line in run.stderr if b"out of range" in line]
            assert warnings, "the reset past the unread records was not reported"
            assert b'"level": "warning"' in warnings[0] and b"lost to this service" in warnings[0], warnings[0]
            assert f"Fetch offset {committed_before} ".encode() in warnings[0], warnings[0]
            return True

        await eventually(reported, what="a warning about the records the reset skipped", timeout_s=HANG_S)
        await eventually(
            lambda: committed_to_the_end(settings, produced), what="the group at the log's new start", timeout_s=HANG_S
        )
