"""The sampler: refreshes the gauges that cost a round trip (consumer lag, outbox backlog) on a timer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.observe.causes import describe, retry_cause
from booking_sessions.observe.metrics import Metrics
from models.faults import error_fields

log = structlog.get_logger(__name__)

# The newest meeting key version on record rides along: one round trip for both.
_OUTBOX_STATS = text(
    """
    SELECT count(*) AS rows,
           -- A row waits from when it was last queued: created, or handed back by `outbox republish`.
           EXTRACT(EPOCH FROM clock_timestamp() - min(coalesce(handed_back_at, created_at))) AS oldest_age_s,
           (SELECT max(version) FROM meeting_keys) AS newest_key_version
    FROM outbox_messages
    WHERE published_at IS NULL
    """
)


class Sampler:
    """Refreshes the gauges that cost a round trip (lag, outbox) every ``interval_s``, not per message."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        interval_s: float,
        timeout_s: float = 30.0,
        input_topic: str | None = None,
        key_version: int | None = None,
    ) -> None:
        self._consumer = consumer
        # This instance's meeting key version (None: a throwaway key, never recorded): checked against the newest
        # on record with every outbox sample.
        self._key_version = key_version
        self._superseded = False
        self._input_topic = input_topic  # its partition count is sampled too (Metrics.set_input_partitions)
        self._engine = engine
        self._metrics = metrics
        self._interval_s = interval_s
        # aiokafka's committed() and end_offsets() retry while the coordinator is away, without a deadline of
        # their own: bounded here, so that one silent broker cannot freeze the gauges the health check reads.
        self._timeout_s = timeout_s

    async def _sample_lag_bounded(self) -> Exception | None:
        """``sample_lag`` within ``timeout_s``; its error (also kept as ``Metrics.kafka_error`` for the health check,
        ``describe``d) is returned, not raised."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self.sample_lag()
        except Exception as error:
            self._metrics.kafka_error = describe(error)
            self._metrics.sample_failed("lag_sampler", error)
            return error
        # Answered: an earlier failure's cause must not be shown for the next outage, whatever that one's is.
        self._metrics.kafka_error = None
        return None

    async def _sample_outbox_bounded(self) -> Exception | None:
        """``sample_outbox`` within ``timeout_s``; its error (also kept as ``Metrics.database_error``) is returned."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self.sample_outbox()
        except Exception as error:
            self._metrics.database_error = describe(error)
            self._metrics.sample_failed("outbox_sampler", error)
            return error
        self._metrics.database_error = None  # as above (a newcomer's find: a freeze shown as the refused connection
        return None  # of a stop a minute before)

    async def sample_lag(self) -> None:
        """Lag per assigned partition (end offset minus committed offset; from the beginning where the group never
        committed, CONTRACT "Topics") into ``Metrics.set_lag``, and the input topic's partition count as the
        consumer knows it into ``Metrics.set_input_partitions``. Raises what the broker raises."""
        if self._input_topic is not None and (partitions := self._consumer.partitions_for_topic(self._input_topic)):
            self._metrics.set_input_partitions(len(partitions))
        assigned = sorted(self._consumer.assignment())
        if not assigned:
            self._metrics.set_lag({})
            return
        ends = await self._consumer.end_offsets(assigned)
        committed = await asyncio.gather(*(self._consumer.committed(tp) for tp in assigned))
        never = [tp for tp, offset in zip(assigned, committed, strict=True) if offset is None]
        # A group with no committed offset starts at the earliest one (CONTRACT): everything there is lag.
        starts: dict[TopicPartition, int] = await self._consumer.beginning_offsets(never) if never else {}
        lags = {}
        for tp, offset in zip(assigned, committed, strict=True):
            position = starts[tp] if offset is None else offset
            lags[(tp.topic, tp.partition)] = max(0, ends[tp] - position)
        self._metrics.set_lag(lags)

    async def sample_outbox(self) -> None:
        """The unpublished outbox rows and the oldest one's age into ``Metrics.set_outbox``; and whether a newer
        meeting key version than this instance's is on record (``Metrics.set_meeting_key``, logged as an error when
        it first is: a `meeting rekey` run before the new secret reached this instance, whose new sessions still get
        links under the old key). Raises what the database raises."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(_OUTBOX_STATS)).one()
        self._metrics.set_outbox(row.rows, None if row.oldest_age_s is None else float(row.oldest_age_s))
        if self._key_version is None:
            return
        superseded = self._metrics.set_meeting_key(self._key_version, row.newest_key_version)
        if superseded and not self._superseded:
            log.error(
                "meeting_key_superseded",
                key_version=self._key_version,
                newest_on_record=row.newest_key_version,
                hint="new sessions here still get links under the older key: restart this instance with the "
                "secret of the newest version (README, The meeting secret)",
            )
        self._superseded = superseded

    async def run(self, stop: asyncio.Event) -> None:
        """The lag and the outbox, each every ``interval_s`` in a loop of its own, until ``stop``: a silent broker,
        whose lag sample may wait ``timeout_s``, does not leave the database's answer stale meanwhile (/readyz would
        blame the database for the broker), nor a silent database the broker's. A failed sample is logged, never
        raised; the gauges keep their last values."""
        await asyncio.gather(
            self._every(self._sample_lag_bounded, stop), self._every(self._sample_outbox_bounded, stop)
        )

    async def _every(self, sample: Callable[[], Awaitable[Exception | None]], stop: asyncio.Event) -> None:
        while not stop.is_set():
            error = await sample()
            if error is not None:
                # The loop and relay retry and log the outage itself.
                log.warning("metrics_sample_failed", cause=retry_cause(error), **error_fields(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
