"""How the service is doing: the live group's lag per partition, the outbox backlog, the DLQ and the inbox.

Read-only. The committed offsets are read without joining the group (``committed()``), so asking costs the
running service no rebalance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.ops.failures import OperatorError, check_database, close_within, topic_partitions
from booking_sessions.service import COMMITTED_ONLY, create_engine
from booking_sessions.settings import Settings

_OUTBOX = text(
    """
    SELECT count(*) AS backlog, EXTRACT(EPOCH FROM now() - min(coalesce(handed_back_at, created_at))) AS oldest_age_s
    FROM outbox_messages WHERE published_at IS NULL
    """
)
_INBOX = text("SELECT outcome, count(*) AS n FROM inbox_messages GROUP BY outcome ORDER BY outcome")
_SESSIONS = text("SELECT status, count(*) AS n FROM live_sessions GROUP BY status ORDER BY status")


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition's offsets: the group's committed offset, the beginning and the end (next offset to write)."""

    partition: int
    committed: int | None  # None: the group never committed here (it will start at the beginning)
    beginning: int
    end: int

    @property
    def lag(self) -> int:
        """Records the group has still to commit; a group that never committed starts at the beginning (CONTRACT,
        "Topics"), and a committed offset below the beginning (records deleted by retention) counts from there."""
        position = self.beginning if self.committed is None else max(self.committed, self.beginning)
        return max(0, self.end - position)


@dataclass(frozen=True, slots=True)
class Status:
    """What ``booking-sessions status`` shows: lag per input partition, outbox backlog (rows; age of the oldest in
    seconds, None when none waits), DLQ size (records), inbox rows by outcome, sessions by status."""

    input_topic: str
    group_id: str
    partitions: list[PartitionLag]
    outbox_backlog: int
    outbox_oldest_age_s: float | None
    dlq_topic: str
    dlq_size: int
    inbox: dict[str, int]
    sessions: dict[str, int]  # live sessions by status: SCHEDULED, CANCELLED

    @property
    def lag(self) -> int:
        """The total lag of the input topic, in records."""
        return sum(p.lag for p in self.partitions)

    @property
    def inbox_size(self) -> int:
        """Inbox rows of every outcome."""
        return sum(self.inbox.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``status --json``."""
        return {
            "input_topic": self.input_topic,
            "group_id": self.group_id,
            "partitions": [
                {"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag}
                for p in self.partitions
            ],
            "lag": self.lag,
            "outbox_backlog": self.outbox_backlog,
            "outbox_oldest_age_s": self.outbox_oldest_age_s,
            "dlq_topic": self.dlq_topic,
            "dlq_size": self.dlq_size,
            "inbox_size": self.inbox_size,
            "inbox_by_outcome": self.inbox,
            "sessions_by_status": self.sessions,
        }


async def read_status(settings: Settings) -> Status:
    """Read the live group's offsets without joining it (no rebalance), the topics' offsets and the tables' counts.

    Raises OperatorError when the broker, a topic or the database is not there as configured (``failures``)."""
    if settings.kafka_bootstrap is None:
        raise OperatorError("BOOKING_KAFKA_BOOTSTRAP is not set: status reads the live group's offsets")
    bootstrap = settings.kafka_bootstrap
    options = kafka_client_options(settings)
    inputs = await topic_partitions(bootstrap, settings.input_topic, "BOOKING_INPUT_TOPIC", **options)
    dlq = await topic_partitions(bootstrap, settings.dlq_topic, "BOOKING_DLQ_TOPIC", **options)
    engine = create_engine(settings)
    try:
        await check_database(engine, settings.database_url_value())
        backlog, oldest_age_s, inbox, sessions = await _database(engine)
    finally:
        await engine.dispose()
    # Not started as a member: with no subscription it never joins, so the live group is not disturbed. Committed
    # records only, as `run` reads them: the end offsets are then the last stable ones, and so is the lag.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id="booking-sessions-status", group_id=settings.group_id,
        enable_auto_commit=False, **COMMITTED_ONLY, **options,
    )  # fmt: skip
    await consumer.start()
    try:
        lags = await _lags(consumer, settings.input_topic, inputs)
        dlq_size = sum(p.end - p.beginning for p in await _lags(consumer, settings.dlq_topic, dlq, committed=False))
    finally:
        await close_within(consumer.stop(), "consumer")
    return Status(
        settings.input_topic,
        settings.group_id,
        lags,
        backlog,
        oldest_age_s,
        settings.dlq_topic,
        dlq_size,
        inbox,
        {"SCHEDULED": 0, "CANCELLED": 0} | sessions,
    )


async def _lags(
    consumer: AIOKafkaConsumer, topic: str, partitions: Sequence[int], *, committed: bool = True
) -> list[PartitionLag]:
    tps = [TopicPartition(topic, p) for p in partitions]
    beginning = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    return [
        PartitionLag(tp.partition, await consumer.committed(tp) if committed else None, beginning[tp], end[tp])
        for tp in tps
    ]


async def _database(engine: AsyncEngine) -> tuple[int, float | None, dict[str, int], dict[str, int]]:
    async with engine.connect() as conn:
        outbox = (await conn.execute(_OUTBOX)).one()
        inbox = {row.outcome: int(row.n) for row in await conn.execute(_INBOX)}
        sessions = {row.status: int(row.n) for row in await conn.execute(_SESSIONS)}
    age = None if outbox.oldest_age_s is None else round(float(outbox.oldest_age_s), 3)
    return int(outbox.backlog), age, inbox, sessions
