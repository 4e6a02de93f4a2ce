"""The outbox relay: unpublished rows -> Kafka in id order, marked published only after the broker's ack.

At least once: a crash after the send and before the update re-sends the rows, with the same message_id.
One relay at a time per database (an advisory lock), so rows leave in id order and each booking's events
stay in order, however many service instances run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

import structlog
from opentelemetry import trace
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.backoff import jittered
from models.faults import is_transient
from models.records import Headers, OutgoingRecord
from models.trace_context import DEFAULT_MAX_LINKS, TraceContext, as_headers
from producer.publish import Publisher
from producer.tracing import Links, created, sending_span

log = structlog.get_logger(__name__)

# Shared by every instance of the service on one database: only the holder publishes.
RELAY_LOCK = 0x72656C6179

_NEXT_ROWS = text(
    """
    SELECT id, message_id, topic, key, payload, traceparent, tracestate
    FROM outbox_messages
    WHERE published_at IS NULL
    ORDER BY id
    LIMIT :limit
    """
)
_MARK_PUBLISHED = text("UPDATE outbox_messages SET published_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))")


class RelayObserver(Protocol):
    """What the relay reports for metrics and readiness (booking_sessions.observe.metrics.Metrics implements it)."""

    def relay_stepped(self, published: int, duration_s: float) -> None: ...

    def relay_retried(self, error: BaseException) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        *,
        batch_rows: int,
        idle_poll_s: float = 1.0,
        retry_max_s: float = 10.0,
        observer: RelayObserver | None = None,
        step_timeout_s: float = 90.0,
        tracer: trace.Tracer | None = None,
        max_links: int = DEFAULT_MAX_LINKS,
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

    def wake(self) -> None:
        """New outbox rows were committed: publish now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Publish the next rows in order; return how many went out (0: none waiting, or another relay leads)."""
        started = time.perf_counter()
        # Each wait inside has its client's deadline; this one bounds the step as a whole (see
        # booking_sessions.service.relay_step_timeout_s). Its TimeoutError is transient: the rows stay unpublished
        # and the step is retried with backoff, on a new connection (the old one is invalidated, not pooled).
        async with asyncio.timeout(self._step_timeout_s):
            sent = await self._step()
        if self._observer is not None:
            self._observer.relay_stepped(sent, time.perf_counter() - started)
        return sent

    async def _step(self) -> int:
        async with self._engine.begin() as conn:
            leader = await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": RELAY_LOCK})
            if not leader:
                return 0
            rows = (await conn.execute(_NEXT_ROWS, {"limit": self._batch_rows})).all()
            if not rows:
                return 0
            with sending_span(self._tracer, rows[0].topic, len(rows), self._max_links) as links:
                records = [self._record(row, links) for row in rows]
                await self._publisher.send_batched(records)
            await conn.execute(_MARK_PUBLISHED, {"ids": [row.id for row in rows]})
        log.info("outbox_published", rows=len(rows), last_id=rows[-1].id)
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
        delay = 0.2
        while not stop.is_set():
            self._wake.clear()  # before the query: a wake-up during it is not lost
            try:
                sent = await self.run_once()
                delay = 0.2
            except Exception as error:
                if self._observer is not None:
                    self._observer.relay_retried(error)
                if is_transient(error):
                    log.warning("relay_retry", cause=type(error).__name__, error=str(error)[:300], retry_in_s=delay)
                else:
                    # Not the world's fault, and not the consumer's: the rows wait, in order, and the consumer
                    # keeps applying events. /readyz turns red (no relay progress) instead of a crash loop.
                    log.error("relay_failed", cause=type(error).__name__, error=str(error)[:300], exc_info=True)
                    delay = self._retry_max_s
                await _wait_either(stop, asyncio.Event(), jittered(delay))
                delay = min(delay * 2, self._retry_max_s)
                continue
            if sent == 0:
                await _wait_either(stop, self._wake, self._idle_poll_s)


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
