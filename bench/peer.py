"""(c2) The peer: the same workload as a Python team would write it today with FastStream and faststream-outbox.

Written the way their documentation shows it: a ``KafkaBroker`` subscriber on the input topic that commits each
message's offset after its handler (``AckPolicy.ACK``), a handler that opens one SQLAlchemy ``AsyncSession``
transaction per message (inbox insert, then the session, participant and reservation upserts, then the outbox rows
through ``OutboxBroker.publish(..., session=session)``), and the framework's relay: an ``OutboxBroker``
subscriber with the Kafka publisher stacked on it, one row at a time, in id order (one worker). The input is
validated with the contract's pydantic model in a FastStream decoder.

It reuses the pure ``decide`` (the domain rules: which snapshot wins, what gets announced, cancellation is final),
so the comparison is about the plumbing: framework dispatch, a transaction and an offset commit per message, and
a relay that claims, publishes and deletes row by row. What it leaves out, and the workload does not exercise: the
dead-letter topic, payload conflicts (a repeated message id is dropped whatever its payload), and tracing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from faststream import AckPolicy, Context
from faststream.kafka import KafkaBroker, KafkaMessage, KafkaResponse
from faststream.message import StreamMessage
from faststream_outbox import OutboxBroker, make_outbox_table
from sqlalchemy import MetaData, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bench.session_rows import session_columns, session_row
from consumer.decide import Decision, SessionRow, decide
from models.events import BookingEvent
from models.tables import inbox_messages, live_sessions, session_participants, session_reservations

OUTBOX_TABLE = "peer_outbox"
OUTBOX_QUEUE = "session_events"

metadata = MetaData()
outbox_table = make_outbox_table(metadata, table_name=OUTBOX_TABLE)


@dataclass
class PeerCounts:
    """What the peer's handlers did, for the bench's notes and its done-condition."""

    handled: int = 0
    duplicates: int = 0
    relayed: int = 0
    first_at: float | None = None  # monotonic, when the first message reached the handler
    last_at: float = 0.0


@dataclass
class Peer:
    kafka: KafkaBroker
    outbox: OutboxBroker
    engine: AsyncEngine
    counts: PeerCounts = field(default_factory=PeerCounts)

    async def start(self) -> None:
        """The outbox table (the application's own migration, in a real project), then both brokers."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await self.kafka.start()
        await self.outbox.start()

    async def stop(self) -> None:
        await self.outbox.stop()
        await self.kafka.stop()
        await self.engine.dispose()

    async def waiting(self) -> int:
        """Outbox rows the relay has not yet published (it deletes each once Kafka acknowledged it)."""
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(outbox_table)) or 0)


async def _decode_event(message: StreamMessage[Any]) -> BookingEvent:
    # The contract's model is strict (JSON types only): validated from the bytes, as FastStream's docs show for a
    # custom decoder.
    return BookingEvent.model_validate_json(message.body)


def build_peer(
    *,
    bootstrap: str,
    database_url: str,
    input_topic: str,
    output_topic: str,
    group_id: str,
    link_for: Any,
) -> Peer:
    """The FastStream application, wired but not started. ``link_for``: session id -> meeting link."""
    # Pool: the relay's fetch and LISTEN connections, one worker, the handler's session, headroom.
    engine = create_async_engine(database_url, pool_size=5, max_overflow=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    # FastStream logs each message received and processed at INFO, to stdout: a logger of our own at WARNING keeps
    # the bench's output to its own lines (the other stages log nothing per record either); errors still show.
    log = logging.getLogger("bench.peer")
    log.setLevel(logging.WARNING)
    kafka = KafkaBroker(bootstrap, acks="all", client_id="bench-peer", logger=log)
    outbox = OutboxBroker(engine, outbox_table=outbox_table, logger=log)
    peer = Peer(kafka, outbox, engine)
    counts = peer.counts

    @kafka.subscriber(
        input_topic,
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,  # the offset is committed after the handler's transaction
        decoder=_decode_event,
    )
    async def handle(event: BookingEvent, message: KafkaMessage) -> None:
        counts.first_at = counts.first_at or time.monotonic()
        raw = message.raw_message
        assert not isinstance(raw, tuple)  # a single-message subscriber
        async with sessions() as session, session.begin():
            if await _record_in_inbox(session, event, raw.value, raw.topic, raw.partition, raw.offset):
                await _apply(session, outbox, event, link_for)
            else:
                counts.duplicates += 1
        counts.handled += 1
        counts.last_at = time.monotonic()

    publisher = kafka.publisher(output_topic)

    @publisher
    @outbox.subscriber(OUTBOX_QUEUE, max_workers=1, min_fetch_interval=0.1)
    async def relay(body: dict[str, Any], message: StreamMessage[Any] = Context()) -> KafkaResponse:  # noqa: B008
        # FastStream hands over the row's payload decoded (JSON); the record carries the stored bytes unchanged.
        counts.relayed += 1
        headers = message.headers
        return KafkaResponse(message.body, key=headers["key"].encode(), headers={"message_id": headers["message_id"]})

    return peer


async def _record_in_inbox(
    session: AsyncSession, event: BookingEvent, value: bytes, topic: str, partition: int, offset: int
) -> bool:
    """The inbox row; False when the message id was already there (a duplicate: nothing else happens)."""
    statement = (
        insert(inbox_messages)
        .values(
            message_id=event.message_id,
            event_type=event.type,
            booking_id=event.booking_id,
            payload_sha256=hashlib.sha256(value).hexdigest(),
            outcome="applied",
            topic=topic,
            partition=partition,
            offset=offset,
        )
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(inbox_messages.c.message_id)
    )
    return (await session.scalar(statement)) is not None


async def _current(session: AsyncSession, booking_id: str) -> SessionRow | None:
    s = live_sessions.c
    found = (
        await session.execute(select(live_sessions).where(s.booking_request_id == booking_id).with_for_update())
    ).first()
    return session_row(found)


async def _apply(session: AsyncSession, outbox: OutboxBroker, event: BookingEvent, link_for: Any) -> None:
    decision = decide(await _current(session, event.booking_id), [event], link_for, datetime.now(UTC))
    await _upsert_session(session, decision)
    for student in sorted(decision.learners):
        await _upsert_learner(session, decision.session_id, student, cancelled=decision.cancelled)
    for out in decision.outbox:
        headers = {"message_id": str(out.message_id), "key": out.key}
        await outbox.publish(out.payload().encode(), queue=OUTBOX_QUEUE, session=session, headers=headers)


async def _upsert_session(session: AsyncSession, decision: Decision) -> None:
    row = decision.session
    if row is None:
        return
    values = session_columns(row)
    statement = insert(live_sessions).values(
        id=row.id, booking_request_id=row.booking_id, meeting_link=row.meeting_link, **values
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["booking_request_id"], set_={**values, "updated_at": func.now()}
        )
    )
    if row.cancellation is not None:
        r = session_reservations.c
        await session.execute(update(session_reservations).where(r.session_id == row.id).values(status="CANCELLED"))


async def _upsert_learner(session: AsyncSession, session_id: UUID, student: str, *, cancelled: bool) -> None:
    await session.execute(
        insert(session_participants)
        .values(session_id=session_id, user_id=student, role="LEARNER")
        .on_conflict_do_nothing()
    )
    await session.execute(
        insert(session_reservations)
        .values(session_id=session_id, learner_id=student, status="CANCELLED" if cancelled else "CONFIRMED")
        .on_conflict_do_nothing()
    )
