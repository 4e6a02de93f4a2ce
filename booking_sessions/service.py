"""Wiring: builds the engine, Kafka clients, consumer loop and relay from Settings, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer
from opentelemetry import trace
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from booking_sessions.database_deadlines import DRIVER_MARGIN_S, database_deadlines, drop_unusable_connections
from booking_sessions.database_pool import ping_idle_connections
from booking_sessions.database_tls import database_connect_args
from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.logs import register_secrets
from booking_sessions.meeting import check_meeting_key, meeting_key
from booking_sessions.observe.health import Health
from booking_sessions.observe.http import GroupMembership
from booking_sessions.observe.metrics import Metrics
from booking_sessions.observe.sampler import Sampler
from booking_sessions.observe.tracing import link_limit
from booking_sessions.retention import Retention
from booking_sessions.settings import Settings
from consumer import wire
from consumer.batch import BatchProcessor
from consumer.decode import Limits
from consumer.loop import BatchHook, ConsumerLoop
from consumer.results import BatchResult
from models.errors import ConfigurationError
from producer.publish import Publisher
from producer.relay import OutboxRelay, Shards
from producer.shards import shards_for

log = structlog.get_logger(__name__)


@dataclass
class Service:
    """One running instance's parts, built by ``open_service`` from ``Settings`` (the one place engines and
    clients are made): the engine, the producer, the consumer and its loop, the relay, metrics, group membership,
    the sampler, retention and health. ``run_until`` runs them; ``stage`` names what a shutdown is waiting for."""

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
    health: Health
    stage: str = "consuming"

    def unfinished(self) -> dict[str, Any]:
        """What a shutdown that gives up leaves behind (read from the signal's timer thread: plain attributes)."""
        return {
            "stage": self.stage,
            "batch_not_committed": self.loop.in_hand,
            "outbox_rows_unpublished_at_last_sample": self.metrics.outbox_waiting,
        }


# How often the consumer reads the topics' metadata even when nothing asks for it: partitions added to the input
# topic are assigned (the group rebalances) within this, not within aiokafka's 5 minutes. One small request.
METADATA_MAX_AGE_MS = 30_000

# Bounded fetches: a burst of large records cannot exhaust memory (also used by replay and the bench).
FETCH_LIMITS: dict[str, int] = {"max_partition_fetch_bytes": 1024 * 1024, "fetch_max_bytes": 16 * 1024 * 1024}

# Committed records only, for every consumer that applies events (``run``, ``replay``) and for ``status``, which
# reports their lag: a booking service that publishes in Kafka transactions and aborts one never published those
# events, so they must not make or change a session (with aiokafka's default, read_uncommitted, they did). A record
# of a transaction still open waits until it commits (the partition's last stable offset); records of producers
# without transactions are read as before.
COMMITTED_ONLY: dict[str, str] = {"isolation_level": "read_committed"}


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
    settings: Settings,
    engine: AsyncEngine,
    publisher: Publisher,
    *,
    dry_run: bool = False,
    tracer_provider: trace.TracerProvider | None = None,
    group_id: str | None = None,
    park_locked: bool = False,
) -> BatchProcessor:
    """The one way batches are applied, for ``run`` and for ``replay`` alike; spans from ``tracer_provider`` (the
    global one by default: the API's no-op one unless booking_sessions.observe.tracing set it up), naming the consumer
    group ``group_id`` (default: the service's); ``park_locked`` for ``run``'s loop, which holds a partition at a
    booking locked elsewhere (consumer.parking) while the others go on."""
    return BatchProcessor(
        engine,
        publisher,
        link_for=meeting_links(settings),
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        limits=input_limits(settings),
        parallel_transactions=settings.parallel_transactions,
        dry_run=dry_run,
        tracer=trace.get_tracer("booking_sessions", tracer_provider=tracer_provider),
        consumer_group=group_id or settings.group_id,
        max_links=link_limit(),
        park_locked=park_locked,
    )


# How often readiness and liveness are re-assessed (from memory: no I/O).
HEALTH_INTERVAL_S = 1.0


def create_engine(settings: Settings) -> AsyncEngine:
    """The one engine factory of every command: pool sizes and every database deadline (``database_deadlines``)."""
    engine = create_async_engine(
        settings.database_url_value(),
        # One connection per transaction in flight, one for the relay, one for the metrics sampler; the overflow
        # covers the repeat lookup of the batch fetched ahead and a retention round (one short transaction at a time).
        pool_size=settings.parallel_transactions + 2,
        max_overflow=2,
        # A connection killed while idle is replaced, not handed to a batch: pinged when it sat idle, not at every
        # checkout (booking_sessions.database_pool).
        pool_pre_ping=False,
        pool_timeout=settings.database_pool_timeout_s,
        pool_recycle=settings.database_pool_recycle_s,
        connect_args={**database_connect_args(settings), **database_deadlines(settings)},
    )
    event.listen(engine.sync_engine, "handle_error", drop_unusable_connections)
    ping_idle_connections(engine.sync_engine)
    return engine


def relay_step_timeout_s(settings: Settings) -> float:
    """A relay step reads rows, sends them and waits for the acks, then marks them: each wait is bounded by its
    client, but the producer's accumulator may hold a batch for a partition without a leader beyond any one request
    timeout. The step as a whole gets a deadline that only a silent broker or database reaches."""
    return settings.database_statement_timeout_s + DRIVER_MARGIN_S + 2 * settings.kafka_request_timeout_s


def owned_shards(consumer: AIOKafkaConsumer, topic: str) -> Shards:
    """The relay shards of the input partitions ``consumer`` owns now (producer/shards.py): the relay asks before
    each step, so after a rebalance it relays what its new partitions bring, and stops relaying what it lost."""

    def shards() -> frozenset[int]:
        partitions = consumer.partitions_for_topic(topic) or set()
        owned = (tp.partition for tp in consumer.assignment() if tp.topic == topic)
        return shards_for(owned, len(partitions))

    return shards


@contextlib.asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    before_offset_commit: BatchHook | None = None,
    on_committed: BatchHook | None = None,
    metrics: Metrics | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> AsyncIterator[Service]:
    """Build and start a ``Service``; stop and close everything on exit, in reverse order.

    Takes the settings and, for tests and the bench, hooks called with each batch's result before its offset commit
    and after it, a ``Metrics`` to share, and a tracer provider. Raises ConfigurationError without a broker, without
    a meeting secret, or when the secret does not fit the recorded key (CONTRACT "Output": links never change
    silently); waits (SIGTERM ends the wait) for a database that is away or not migrated yet.
    """
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
        # Before any record: links under another key would differ silently. A database that is away is waited for.
        await check_meeting_key(engine, key, wait_for_database=True, retried=metrics.startup_retried)
        publisher = await Publisher.start(settings.kafka_bootstrap, client_id="booking-sessions", **client_options)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="booking-sessions",
            group_id=settings.group_id,
            enable_auto_commit=False,
            # A group with no committed offsets replays the whole topic, harmlessly (CONTRACT).
            auto_offset_reset="earliest",
            # A broker holds a fetch until this long when data is scarce: it bounds the latency of a quiet stream
            # (aiokafka's 500 ms alone would spend the p99 budget); under load fetches fill up long before.
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            **FETCH_LIMITS,
            **COMMITTED_ONLY,
            **client_options,
        )
        group = GroupMembership()
        consumer.subscribe([settings.input_topic], listener=group)
        await consumer.start()
        processor = batch_processor(settings, engine, publisher, tracer_provider=tracer_provider, park_locked=True)
        relay = OutboxRelay(
            engine,
            publisher,
            batch_rows=settings.relay_batch_rows,
            observer=metrics,
            step_timeout_s=relay_step_timeout_s(settings),
            tracer=trace.get_tracer("booking_sessions", tracer_provider=tracer_provider),
            max_links=link_limit(),
            shards=owned_shards(consumer, settings.input_topic),
        )

        async def committed(result: BatchResult) -> None:
            # The rows are committed: the relay sends them while the offsets commit, not after (latency).
            if result.outbox_rows:
                relay.wake()
            if before_offset_commit is not None:
                await before_offset_commit(result)

        loop = ConsumerLoop(
            consumer,
            processor,
            max_records=settings.max_batch_records,
            catch_up_records=settings.catch_up_batch_records,
            before_offset_commit=committed,
            after_commit=on_committed,
            observer=metrics,
            commit_timeout_s=settings.kafka_commit_timeout_s,
        )
        sampler = Sampler(
            consumer,
            engine,
            metrics,
            interval_s=settings.metrics_refresh_s,
            timeout_s=settings.kafka_request_timeout_s + DRIVER_MARGIN_S,
            input_topic=settings.input_topic,
            key_version=None if key.throwaway else key.version,
        )
        retention = Retention(
            engine,
            inbox=settings.inbox_retention,
            outbox=settings.outbox_retention,
            interval_s=settings.retention_interval_s,
            batch_rows=settings.retention_batch_rows,
            observer=metrics,
        )
        health = Health(
            metrics,
            group.check,
            stall_after_s=settings.stall_after_s,
            interval_s=min(HEALTH_INTERVAL_S, settings.metrics_refresh_s),
            refresh_s=settings.metrics_refresh_s,
        )
        yield Service(settings, engine, publisher, consumer, loop, relay, metrics, group, sampler, retention, health)
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
    health_task = asyncio.create_task(service.health.run(stop), name="health")
    try:
        await service.loop.run(stop)
    finally:
        service.stage = "stopping the relay, sampler, retention and health check"
        stop.set()
        # First the three that never raise, so a failed relay cannot leave them pending.
        await sampler_task
        await retention_task
        await health_task
        await relay_task
    service.stage = "flushing the outbox relay"
    await service.relay.drain()
    service.stage = "closing the Kafka clients and the database pool"
