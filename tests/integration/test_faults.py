"""Faults production brings: database and broker outages, rebalances, SIGTERM under load, SIGKILL anywhere.

The promise checked each time: every valid event applied once in effect, nothing lost, one session and one
SessionCreated id per booking, output repeated only with the same message ids, no dead letter for a fault
of the world.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from booking_sessions.dev.postgres import PostgresCluster
from booking_sessions.service import Service, run_until
from booking_sessions.settings import Settings
from tests.integration.harness import (
    Produced,
    committed_offsets,
    publish,
    query,
    read_json,
    running_process,
    service,
    sigterm,
    some_applied,
)
from tests.integration.workloads import all_applied_and_published, assert_matches_reference, count, workload
from tests.servers.apache_kafka import ApacheKafka
from tests.servers.ladder import KafkaHandle, PostgresHandle
from tests.waiting import eventually

pytestmark = pytest.mark.faults


class Running:
    """The in-process service running in the background until ``stop()`` (or the end of an ``async with``)."""

    def __init__(self, svc: Service) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(run_until(svc, self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        await self.task

    async def __aenter__(self) -> Running:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def test_database_outage_is_retried_not_dead_lettered(
    postgres: PostgresHandle, settings: Settings, database_url: str
) -> None:
    if not isinstance(postgres.server, PostgresCluster):
        pytest.skip("the database is not ours to stop (env or testcontainers)")
    events = workload(60)
    produced = Produced()
    await publish(settings, events[:60], produced)
    async with service(settings) as svc, Running(svc):
        await some_applied(database_url, "the first batch applied")
        outage = postgres.server.down()
        await asyncio.to_thread(outage.__enter__)
        try:
            await publish(settings, events[60:], produced)  # arrives while PostgreSQL is away
            await asyncio.sleep(3)  # the outage itself, not synchronisation: 3 s without a database
        finally:
            await asyncio.to_thread(outage.__exit__, None, None, None)
        await all_applied_and_published(database_url, events)
    await assert_matches_reference(settings, database_url, events)
    assert await read_json(settings, settings.dlq_topic, 0) == []


async def test_broker_restart_mid_stream_loses_nothing(
    kafka: KafkaHandle, settings: Settings, database_url: str
) -> None:
    if not isinstance(kafka.server, ApacheKafka):
        pytest.skip("needs our own Apache Kafka: Tansu keeps no log across a restart")
    events = workload(60)
    produced = Produced()
    await publish(settings, events, produced)
    async with service(settings) as svc, Running(svc):
        await some_applied(database_url, "the first batch applied")
        await asyncio.to_thread(kafka.server.restart)
        await all_applied_and_published(database_url, events, timeout_s=120)
    await assert_matches_reference(settings, database_url, events)


async def test_rebalance_when_a_consumer_joins_and_the_first_leaves(settings: Settings, database_url: str) -> None:
    events = workload(150)
    produced = Produced()
    await publish(settings, events[:150], produced)
    async with contextlib.AsyncExitStack() as second_stack:
        async with service(settings) as first, Running(first):
            await some_applied(database_url, "the first consumer at work")
            second = await second_stack.enter_async_context(service(settings))
            await second_stack.enter_async_context(Running(second))
            await publish(settings, events[150:300], produced)

            async def both_assigned() -> bool:
                sizes = sorted(len(s.consumer.assignment()) for s in (first, second))
                assert sizes == [6, 6], f"assignments {sizes}"
                return True

            await eventually(both_assigned, what="the second consumer to get its share", timeout_s=60)
        # The first consumer has left the group (its consumer is closed) mid-stream.
        await publish(settings, events[300:], produced)
        await all_applied_and_published(database_url, events, timeout_s=120)

        async def second_has_all() -> bool:
            assert len(second.consumer.assignment()) == 12, f"{len(second.consumer.assignment())} partitions"
            return True

        await eventually(second_has_all, what="the remaining consumer to own every partition")
    await assert_matches_reference(settings, database_url, events)


async def test_sigterm_under_load_exits_zero_with_everything_applied_committed(
    settings: Settings, database_url: str
) -> None:
    events = workload(400)
    produced = Produced()
    await publish(settings, events, produced)
    async with running_process(settings) as process:
        await some_applied(database_url)
        stderr = await sigterm(process, timeout_s=40)
    assert process.returncode == 0, stderr.decode()[-3000:]
    # Offsets committed for everything applied: per partition, one past the last applied record.
    applied = await query(
        database_url,
        'SELECT partition, max("offset") AS last FROM inbox_messages GROUP BY partition',
    )
    committed = await committed_offsets(settings, list(produced.ends))
    for row in applied:
        tp = (settings.input_topic, row["partition"])
        assert committed[tp] is not None and committed[tp] >= row["last"] + 1, (tp, committed[tp], row["last"])
    # And nothing beyond what was applied (repeats apart, which the inbox does not list again).
    for tp, offset in committed.items():
        assert offset is None or offset <= produced.ends[tp]


async def test_sigkill_at_any_point_then_restart_leaves_the_uninterrupted_result(
    settings: Settings, database_url: str
) -> None:
    events = workload(300, seed=3)
    produced = Produced()
    await publish(settings, events, produced)
    total = len({e.message_id for e in events})
    for fraction in (0.1, 0.4, 0.7):  # killed early, mid-stream and late
        # Small batches: many transaction boundaries, so a kill lands before, during or after a commit.
        # Leaving the block SIGKILLs the process wherever it is.
        async with running_process(settings, BOOKING_MAX_BATCH_RECORDS="40", BOOKING_RELAY_BATCH_ROWS="25"):

            async def progressed(at: float = fraction) -> bool:
                applied = await count(database_url, "SELECT count(*) AS n FROM inbox_messages")
                assert applied >= at * total, f"{applied} of {total} applied"
                return True

            await eventually(progressed, what=f"{fraction:.0%} applied", timeout_s=90, interval_s=0.01)
    async with running_process(settings) as process:
        await all_applied_and_published(database_url, events, timeout_s=120)
        await sigterm(process, timeout_s=40)
    await assert_matches_reference(settings, database_url, events)
