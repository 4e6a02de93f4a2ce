"""The outbox relay: unpublished rows -> Kafka in id order per shard, marked published only after the broker's ack.

At least once: a crash after the send and before the update re-sends the rows, with the same message_id.

Sharded (producer/shards.py): every row of one booking is in one shard, and a relay step holds an advisory lock on
each shard it publishes, so one relay at a time sends a shard, in id order, and each booking's events stay in order
(CONTRACT "Output"), while the instances of the service publish their own shards at once. An instance relays the
shards that go with the input partitions it owns (``shards``), so work follows the consumer group; when its own
shards have nothing to send, and at least every ``sweep_s`` under load, it also takes any other shard no relay holds
at that moment: rows written while nobody owned their shard (no consumer running, a rebalance, an operator
command, an instance of the previous release owning the partition) are published all the same.

A zombie (an instance that lost its partitions but still runs, or stalled and came back) cannot send a shard while
another relay does: the locks are transaction-scoped, so the new owner waits until the zombie's step ends, or until
PostgreSQL ends the zombie's session (``idle_in_transaction_session_timeout``, TCP keepalives); a zombie that comes
back after that can only re-send copies of rows already published (same message_ids, which the video service
drops), never a row before an older one of its booking: each relay sends a shard's unpublished rows from the
oldest, and marks them only after the ack.

Every step also takes ``RELAY_LOCK`` shared: the previous release's relay (one per database) and ``outbox
republish`` take it exclusively, so neither ever runs beside a step of this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
from opentelemetry import trace
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.backoff import backoff
from models.faults import error_fields, is_transient
from models.records import Headers, OutgoingRecord
from models.trace_context import DEFAULT_MAX_LINKS, TraceContext, as_headers
from producer.shards import ALL_SHARDS
from producer.tracing import Links, created, sending_span

log = structlog.get_logger(__name__)

# Shared by every instance on one database. Exclusive: the previous release's relay step and `outbox republish`
# resetting rows; shared: each step of this release's relays, which exclude one another per shard instead.
RELAY_LOCK = 0x72656C6179
# The first key of each shard's two-key advisory lock, (SHARD_LOCK_CLASS, shard): "rela" in ASCII.
SHARD_LOCK_CLASS = 0x72656C61

# The fleet lock, then every free shard of those asked for; returns the shards locked. The CTEs are materialized
# (they call volatile functions): each lock is tried once, in this order. Its own statement, before the rows are
# read: a statement sees the database as of its start, so rows read in the statement that takes the locks could
# be those a step that released a lock meanwhile has just sent (copies, seen in the bench before this was split).
_LOCK_SHARDS = text(
    """
    WITH fleet AS MATERIALIZED (SELECT pg_try_advisory_xact_lock_shared(CAST(:fleet AS bigint)) AS ok),
    locked AS MATERIALIZED (
        SELECT s.shard FROM fleet, unnest(CAST(:shards AS integer[])) AS s(shard)
        WHERE CASE WHEN fleet.ok THEN pg_try_advisory_xact_lock(CAST(:class AS integer), s.shard) ELSE false END
    )
    SELECT coalesce(array_agg(shard ORDER BY shard), '{}') FROM locked
    """
)
# The oldest unpublished rows of the shards locked, each shard's in id order. Two plans, by the number of shards:
# up to 4, each shard read through ix_outbox_messages_shard_unpublished (migration 0005) up to the limit; more, the
# waiting rows in id order, those of other shards skipped. Measured for 1,000 of 100,000 waiting rows: one shard
# 15 ms against 83 ms; 60 shards 13 ms against 169 ms; even at 5. Either way each shard's rows are a prefix of its
# waiting rows in id order.
_FEW_SHARDS = 4
_NEXT_ROWS_OF_FEW = text(
    """
    SELECT r.id, r.message_id, r.topic, r.key, r.payload, r.traceparent, r.tracestate
    FROM unnest(CAST(:shards AS integer[])) AS locked(shard) CROSS JOIN LATERAL (
        SELECT id, message_id, topic, key, payload, traceparent, tracestate
        FROM outbox_messages
        WHERE published_at IS NULL AND outbox_shard(key) = locked.shard
        ORDER BY id
        LIMIT :limit
    ) AS r
    ORDER BY r.id
    LIMIT :limit
    """
)
_NEXT_ROWS_OF_MANY = text(
    """
    SELECT id, message_id, topic, key, payload, traceparent, tracestate
    FROM outbox_messages
    WHERE published_at IS NULL AND outbox_shard(key) = ANY(CAST(:shards AS integer[]))
    ORDER BY id
    LIMIT :limit
    """
)
# Every shard locked (one instance owns every partition, or an operator command): the oldest waiting rows, through
# ix_outbox_messages_unpublished, without computing a shard per row.
_NEXT_ROWS_OF_ALL = text(
    """
    SELECT id, message_id, topic, key, payload, traceparent, tracestate
    FROM outbox_messages
    WHERE published_at IS NULL
    ORDER BY id
    LIMIT :limit
    """
)
_MARK_PUBLISHED = text("UPDATE outbox_messages SET published_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))")

Shards = Callable[[], frozenset[int]]


class BatchSender(Protocol):
    """Where the rows go (producer.publish.Publisher): returns once the broker acknowledged every record, each
    partition's records kept in order; raises the client's error otherwise."""

    async def send_batched(self, records: Sequence[OutgoingRecord]) -> None:
        """Send ``records``; return once every one is acknowledged (acks=all), raise the client's error if not."""
        ...


class RelayObserver(Protocol):
    """What the relay reports for metrics and readiness (booking_sessions.observe.metrics.Metrics implements it)."""

    def relay_stepped(self, published: int, duration_s: float) -> None:
        """A step ended: ``published`` rows sent and marked, in ``duration_s`` seconds (0 rows: nothing waiting)."""
        ...

    def relay_retried(self, error: BaseException) -> None:
        """A step failed with ``error`` and will be retried after a backoff."""
        ...


class OutboxRelay:
    """Publishes the outbox. ``shards`` says which shards this instance owns now (called before each step; from
    the consumer group's assignment, see booking_sessions.service); None, for operator commands: every shard."""

    def __init__(
        self,
        engine: AsyncEngine,
        publisher: BatchSender,
        *,
        batch_rows: int,
        idle_poll_s: float = 1.0,
        retry_max_s: float = 10.0,
        observer: RelayObserver | None = None,
        step_timeout_s: float = 90.0,
        tracer: trace.Tracer | None = None,
        max_links: int = DEFAULT_MAX_LINKS,
        shards: Shards | None = None,
        sweep_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._batch_rows = batch_rows
        self._idle_poll_s = idle_poll_s
        self._retry_max_s = retry_max_s
        self._observer = observer
        self._step_timeout_s = step_timeout_s
        self._wake = asyncio.Event()
        # The global tracer is the API's no-op one until tracing is set up (booking_sessions/observe/tracing.py).
        self._tracer = tracer or trace.get_tracer(__name__)
        self._max_links = max_links
        self._shards = shards
        self._sweep_s = sweep_s
        self._swept_at = time.monotonic()
        self.published = 0  # rows this relay sent and marked, since it was made

    def wake(self) -> None:
        """New outbox rows were committed: publish now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Publish the oldest rows of this instance's shards (then, when they had none or a sweep is due, of any
        shard no other relay holds now); return how many went out (0: none waiting, or other relays hold them)."""
        started = time.perf_counter()
        own = ALL_SHARDS if self._shards is None else self._shards() & ALL_SHARDS
        sent = await self._step(own) if own else 0
        others = ALL_SHARDS - own
        if others and (sent == 0 or time.monotonic() - self._swept_at >= self._sweep_s):
            self._swept_at = time.monotonic()
            sent += await self._step(others)
        if self._observer is not None:
            self._observer.relay_stepped(sent, time.perf_counter() - started)
        return sent

    async def _step(self, shards: frozenset[int]) -> int:
        # Each wait inside has its client's deadline; this one bounds the step as a whole (see
        # booking_sessions.service.relay_step_timeout_s). Its TimeoutError is transient: the rows stay unpublished
        # and the step is retried with backoff, on a new connection (the old one is invalidated, not pooled).
        async with asyncio.timeout(self._step_timeout_s), self._engine.begin() as conn:
            asked = {"fleet": RELAY_LOCK, "class": SHARD_LOCK_CLASS, "shards": sorted(shards)}
            locked: list[int] = list(await conn.scalar(_LOCK_SHARDS, asked) or ())
            if not locked:
                return 0
            if len(locked) == len(ALL_SHARDS):
                query = _NEXT_ROWS_OF_ALL
            else:
                query = _NEXT_ROWS_OF_FEW if len(locked) <= _FEW_SHARDS else _NEXT_ROWS_OF_MANY
            rows = (await conn.execute(query, {"shards": locked, "limit": self._batch_rows})).all()
            if not rows:
                return 0
            with sending_span(self._tracer, rows[0].topic, len(rows), self._max_links) as links:
                records = [self._record(row, links) for row in rows]
                await self._publisher.send_batched(records)
            await conn.execute(_MARK_PUBLISHED, {"ids": [row.id for row in rows]})
        self.published += len(rows)
        log.info("outbox_published", rows=len(rows), last_id=rows[-1].id, shards=len(locked))
        return len(rows)

    def _record(self, row: Row[Any], links: Links) -> OutgoingRecord:
        """The row as a Kafka record; one caused by a traced event gets a ``create`` span in that event's trace,
        whose context its ``traceparent`` (and ``tracestate``) headers carry (CONTRACT "Output")."""
        headers: Headers = (("message_id", str(row.message_id).encode()),)
        if row.traceparent is not None:
            cause = TraceContext(row.traceparent, row.tracestate)
            headers += as_headers(created(self._tracer, cause, row.topic, row.key, row.message_id, links))
        return OutgoingRecord(row.topic, row.key.encode(), row.payload.encode(), headers)

    async def drain(self) -> int:
        """Publish until nothing is waiting; return the total."""
        total = 0
        while sent := await self.run_once():
            total += sent
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set: a step whenever woken (``wake``, after each batch's commit) or every
        ``idle_poll_s`` seconds, and at once again after a full step. A failing step is retried with the one backoff
        policy (``models.backoff``), from 0.2 s up to ``retry_max_s``, whatever the error: the rows wait, in order,
        and the consumer keeps applying events; a fault that is not the world's is logged with its traceback and
        turns /readyz red (no relay progress) instead of a crash loop (CONTRACT "Delivery"). Returns when ``stop``
        is set; raises nothing."""

        async def pause(seconds: float) -> None:
            await _wait_either(stop, asyncio.Event(), seconds)
            if stop.is_set():
                raise _Stopped

        while not stop.is_set():
            self._wake.clear()  # before the query: a wake-up during it is not lost
            sent = 0
            try:
                retrying = backoff(
                    initial_s=0.2, max_s=self._retry_max_s, sleep=pause, on_retry=self._retried, retry_on=_always
                )
                async for attempt in retrying:
                    with attempt:
                        sent = await self.run_once()
            except _Stopped:
                return
            # A step that took fewer rows than it may found every row there was: the next one waits for a wake-up
            # (rows committed since the query) or the poll, rather than asking again at once to find none.
            if sent < self._batch_rows:
                await _wait_either(stop, self._wake, self._idle_poll_s)

    def _retried(self, error: BaseException, wait_s: float) -> None:
        if self._observer is not None:
            self._observer.relay_retried(error)
        fields = {"cause": type(error).__name__, **error_fields(error), "retry_in_s": round(wait_s, 2)}
        if is_transient(error):
            log.warning("relay_retry", **fields)
        else:
            log.error("relay_failed", **fields, exc_info=error)


class _Stopped(Exception):
    """``stop`` was set during a backoff: the relay returns."""


def _always(_: BaseException) -> bool:
    return True


async def _wait_either(first: asyncio.Event, second: asyncio.Event, timeout_s: float) -> None:
    """Sleep until either event is set or the timeout passes, whichever comes first."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
