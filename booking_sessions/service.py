"""Wiring: builds the engine, Kafka clients, consumer loop and relay from Settings, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from booking_sessions.database_tls import database_connect_args
from booking_sessions.http import GroupMembership, Readiness
from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.logs import register_secrets
from booking_sessions.meeting import check_meeting_key, meeting_key
from booking_sessions.metrics import Metrics, Sampler
from booking_sessions.retention import Retention
from booking_sessions.settings import Settings
from consumer import wire
from consumer.decode import Limits
from consumer.loop import BatchHook, ConsumerLoop
from consumer.process import BatchProcessor, BatchResult
from models.errors import ConfigurationError
from producer.publish import Publisher
from producer.relay import OutboxRelay

log = structlog.get_logger(__name__)


@dataclass
class Service:
    settings: Settings
    engine: AsyncEngine
    publisher: Publisher
    consumer: AIOKafkaConsumer
    loop: ConsumerLoop
    relay: OutboxRelay
    metrics: Metrics
    group: GroupMembership
    sampler: Sampler
    retention: Retention

    def readiness(self) -> Readiness:
        """For the HTTP server; call on the event loop the service runs on."""
        return Readiness(
            self.engine,
            self.group,
            lambda: self.metrics.relay_progress_at,
            self.settings.relay_stuck_after_s,
            asyncio.get_running_loop(),
        )


# Bounded fetches: a burst of large records cannot exhaust memory (also used by replay and the bench).
FETCH_LIMITS: dict[str, int] = {"max_partition_fetch_bytes": 1024 * 1024, "fetch_max_bytes": 16 * 1024 * 1024}


def meeting_links(settings: Settings) -> Callable[[UUID], str]:
    """Session id -> meeting link, under the configured base URL, secret and key version.

    Raises ConfigurationError when BOOKING_MEETING_SECRET is not set.
    """
    return partial(meeting_key(settings).link, settings.meeting_base_url)


def input_limits(settings: Settings) -> Limits:
    """The bounds every input record is held to (CONTRACT "Input"; issue 16: keys and headers)."""
    return Limits(
        value_bytes=settings.max_message_bytes,
        key_bytes=settings.max_key_bytes,
        header_count=settings.max_header_count,
        header_bytes=settings.max_header_bytes,
        clock_skew_s=settings.max_clock_skew_s,
    )


def batch_processor(
    settings: Settings, engine: AsyncEngine, publisher: Publisher, *, dry_run: bool = False
) -> BatchProcessor:
    """The one way batches are applied, for ``run`` and for ``replay`` alike."""
    return BatchProcessor(
        engine,
        publisher,
        link_for=meeting_links(settings),
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        limits=input_limits(settings),
        parallel_transactions=settings.parallel_transactions,
        dry_run=dry_run,
    )


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url_value(),
        # One connection per transaction in flight, one for the relay, one for the metrics sampler; the overflow
        # covers /readyz and the repeat lookup of the batch fetched ahead.
        pool_size=settings.parallel_transactions + 2,
        max_overflow=2,
        pool_pre_ping=True,  # a connection killed while idle is replaced, not handed to a batch
        connect_args=database_connect_args(settings),
    )


@contextlib.asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    before_offset_commit: BatchHook | None = None,
    on_committed: BatchHook | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Service]:
    if settings.kafka_bootstrap is None:
        raise ConfigurationError("BOOKING_KAFKA_BOOTSTRAP is not set")
    key = meeting_key(settings)  # first: refuse to start without the secret, before any connection
    register_secrets(settings.secret_values())
    client_options = kafka_client_options(settings)
    wire.install()  # a record the client cannot read becomes a dead letter, not a crash (consumer/wire.py)
    metrics = metrics or Metrics()
    engine = create_engine(settings)
    publisher: Publisher | None = None
    consumer: AIOKafkaConsumer | None = None
    try:
        await check_meeting_key(engine, key)  # before any record: links under another key would differ silently
        publisher = await Publisher.start(settings.kafka_bootstrap, client_id="booking-sessions", **client_options)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="booking-sessions",
            group_id=settings.group_id,
            enable_auto_commit=False,
            # A group with no committed offsets replays the whole topic, harmlessly (CONTRACT).
            auto_offset_reset="earliest",
            # A broker holds a fetch until this long when data is scarce: it bounds the latency of a quiet stream
            # (the default 500 ms alone would spend the p99 budget); under load fetches fill up long before.
            fetch_max_wait_ms=100,
            **FETCH_LIMITS,
            **client_options,
        )
        group = GroupMembership()
        consumer.subscribe([settings.input_topic], listener=group)
        await consumer.start()
        processor = batch_processor(settings, engine, publisher)
        relay = OutboxRelay(engine, publisher, batch_rows=settings.relay_batch_rows, observer=metrics)

        async def after_commit(result: BatchResult) -> None:
            if result.outbox_rows:
                relay.wake()
            if on_committed is not None:
                await on_committed(result)

        loop = ConsumerLoop(
            consumer,
            processor,
            max_records=settings.max_batch_records,
            before_offset_commit=before_offset_commit,
            after_commit=after_commit,
            observer=metrics,
        )
        sampler = Sampler(consumer, engine, metrics, interval_s=settings.metrics_refresh_s)
        retention = Retention(
            engine,
            inbox=settings.inbox_retention,
            outbox=settings.outbox_retention,
            interval_s=settings.retention_interval_s,
            batch_rows=settings.retention_batch_rows,
            observer=metrics,
        )
        yield Service(settings, engine, publisher, consumer, loop, relay, metrics, group, sampler, retention)
    finally:
        if consumer is not None:
            await consumer.stop()
        if publisher is not None:
            await publisher.stop()
        await engine.dispose()


async def run_until(service: Service, stop: asyncio.Event) -> None:
    """Consume and relay until ``stop``; then finish the batch in hand, commit, and flush the relay."""
    relay_task = asyncio.create_task(service.relay.run(stop), name="outbox-relay")
    sampler_task = asyncio.create_task(service.sampler.run(stop), name="metrics-sampler")
    retention_task = asyncio.create_task(service.retention.run(stop), name="retention")
    try:
        await service.loop.run(stop)
    finally:
        stop.set()
        # First the two that never raise, so a failed relay cannot leave them pending.
        await sampler_task
        await retention_task
        await relay_task
    await service.relay.drain()
