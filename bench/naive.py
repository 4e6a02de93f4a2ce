"""(c) The baseline: the old code's style, faithfully. Per message one transaction of check-then-create.

For every record: decode it, BEGIN, SELECT the booking's session, INSERT or UPDATE it, SELECT-then-INSERT the
participant and the reservation, INSERT the outbox row, COMMIT (durable: one WAL flush per message), and commit the
offsets after each fetched batch. Like the old endpoint it has no inbox: a redelivered copy is caught only by the
checks (the row exists, the snapshot is not newer), which a single consumer gets right and two racing ones do not.
It reuses the pure ``decide``, so it leaves the service's rows (less the inbox) and the same outbox payloads; it
publishes nothing. Both omissions flatter it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bench.ceilings import batches_until
from bench.produce import Ends, Progress
from bench.report import Stage
from bench.session_rows import session_columns, session_row
from booking_sessions.service import FETCH_LIMITS
from consumer.client import to_record
from consumer.decide import decide
from consumer.decode import Limits, decode
from models.events import BookingEvent
from models.records import Decoded
from models.tables import live_sessions, outbox_messages, session_participants, session_reservations


class NaiveConsumer:
    def __init__(self, database_url: str, link_for: Callable[[UUID], str], output_topic: str) -> None:
        # A plain pool, no pre-ping: what such code typically had, and cheaper than the service's.
        self._engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
        self._link_for = link_for
        self._output_topic = output_topic
        self.handled = 0
        self.stale = 0  # redelivered copies and older snapshots: the session is left alone

    async def handle(self, d: Decoded) -> None:
        if d.event is None:
            return  # the workload has no poison; the old code had no DLQ either
        async with self._engine.begin() as conn:  # one transaction per message
            await self._apply(conn, d.event)
        self.handled += 1

    async def _apply(self, conn: AsyncConnection, event: BookingEvent) -> None:
        found = (
            await conn.execute(select(live_sessions).where(live_sessions.c.booking_request_id == event.booking_id))
        ).first()
        current = session_row(found)
        decision = decide(current, [event], self._link_for, datetime.now(UTC))
        if decision.session is None:
            self.stale += 1
        row = decision.session
        if row is not None:
            values = session_columns(row)
            if current is None:
                await conn.execute(
                    insert(live_sessions).values(
                        id=row.id, booking_request_id=row.booking_id, meeting_link=row.meeting_link, **values
                    )
                )
            else:
                await conn.execute(update(live_sessions).where(live_sessions.c.id == row.id).values(**values))
            if row.cancellation is not None:
                r = session_reservations.c
                await conn.execute(
                    update(session_reservations).where(r.session_id == row.id).values(status="CANCELLED")
                )
        for student in decision.learners:
            await self._ensure_learner(conn, decision.session_id, student, decision.cancelled)
        for out in decision.outbox:
            await conn.execute(
                insert(outbox_messages).values(
                    message_id=out.message_id, topic=self._output_topic, key=out.key, payload=out.payload()
                )
            )

    async def _ensure_learner(self, conn: AsyncConnection, session: UUID, student: str, cancelled: bool) -> None:
        p, r = session_participants.c, session_reservations.c
        if await conn.scalar(select(p.role).where(p.session_id == session, p.user_id == student)) is None:
            await conn.execute(insert(session_participants).values(session_id=session, user_id=student, role="LEARNER"))
        if await conn.scalar(select(r.status).where(r.session_id == session, r.learner_id == student)) is None:
            await conn.execute(
                insert(session_reservations).values(
                    session_id=session, learner_id=student, status="CANCELLED" if cancelled else "CONFIRMED"
                )
            )

    async def close(self) -> None:
        await self._engine.dispose()


async def run_naive(
    bootstrap: str,
    topic: str,
    ends: Ends,
    consumer_group: str,
    naive: NaiveConsumer,
    *,
    max_message_bytes: int,
    progress: Progress,
) -> Stage:
    """Every record of ``topic`` (the sample), one at a time, offsets committed after each fetched batch."""
    # Assigned, not subscribed: commits go to the group without a join (whose delay is the broker's, not the code's).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=consumer_group, enable_auto_commit=False, **FETCH_LIMITS
    )
    await consumer.start()
    try:
        records = 0
        limits = Limits(value_bytes=max_message_bytes)  # once, as the service's processor holds its own
        started = time.monotonic()
        async for batch in batches_until(consumer, topic, ends):
            for messages in batch.values():
                for m in messages:
                    await naive.handle(decode(to_record(m), limits))
                    progress(1)
                records += len(messages)
            if batch:
                await consumer.commit({tp: OffsetAndMetadata(ms[-1].offset + 1, "") for tp, ms in batch.items()})
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    note = f"{naive.stale:,} left the session alone"
    return Stage("naive", "(c) naive: per message check-then-create", records, seconds, note)
