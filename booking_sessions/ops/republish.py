"""Re-send outbox rows (SessionCreated / SessionUpdated) with their original message ids.

Design: the rows are handed back to the outbox relay by setting ``published_at = NULL``, all in one transaction
that holds the relay's advisory lock, so no relay publishes half a selection. The relay then sends every
unpublished row in id order, the same bytes and the same ``message_id`` as the first time, and each booking's
rows stay in order, also against rows the running service writes meanwhile. With a running service that is all
(its relay wakes within a second); ``relay_now`` also publishes from this process, for when none runs.

Unless ``exact``, each chosen booking's later rows are re-sent too, so the last message a booking gets is its
newest state (a downstream that lost a SessionCreated may have dropped the SessionUpdated that followed it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from rich.progress import Progress
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.ops.failures import OperatorError, check_database, close_within, one_line, topic_partitions
from booking_sessions.service import create_engine
from booking_sessions.settings import Settings
from producer.publish import Publisher
from producer.relay import RELAY_LOCK, OutboxRelay

RELAY_WAIT_S = 120.0  # --relay with a running service: how long to wait for its relay to send the rows

_SELECT = text(
    """
    WITH chosen AS (
        SELECT id, key FROM outbox_messages
        WHERE (cardinality(CAST(:bookings AS text[])) = 0 OR key = ANY(CAST(:bookings AS text[])))
          AND (cardinality(CAST(:sessions AS uuid[])) = 0 OR key IN (
                SELECT booking_request_id FROM live_sessions WHERE id = ANY(CAST(:sessions AS uuid[]))))
          AND (CAST(:since AS timestamptz) IS NULL OR created_at >= CAST(:since AS timestamptz))
          AND (CAST(:until AS timestamptz) IS NULL OR created_at < CAST(:until AS timestamptz))
          AND (cardinality(CAST(:types AS text[])) = 0
               OR CAST(payload AS jsonb) ->> 'type' = ANY(CAST(:types AS text[])))
    ), first_chosen AS (
        SELECT key, min(id) AS from_id FROM chosen GROUP BY key
    )
    SELECT o.id, o.message_id, o.key, CAST(o.payload AS jsonb) ->> 'type' AS type, o.created_at, o.published_at,
           c.id IS NOT NULL AS chosen
    FROM outbox_messages o
    JOIN first_chosen f ON o.key = f.key AND o.id >= f.from_id
    LEFT JOIN chosen c ON c.id = o.id
    WHERE NOT CAST(:exact AS boolean) OR c.id IS NOT NULL
    ORDER BY o.id
    """
)
# Whether a row was chosen is a join, not `o.id IN (SELECT id FROM chosen)`: once the chosen ids outgrew work_mem
# (a few hundred thousand rows; a hundred thousand on statistics a bulk write had just made stale), PostgreSQL ran
# that test as a subplan scanning the whole list for every row, and `--all` over a week's outbox ended at the
# statement timeout (a newcomer's find: 400,000 rows, 31 s; tests/integration/test_outbox_republish_scale.py).
_LOCK_RELAY = text("SELECT pg_advisory_xact_lock(:key)")
# Joined with the ids, not `id = ANY(:ids)`, for the reason _UNPUBLISHED gives below.
_RESET = text(
    "UPDATE outbox_messages o SET published_at = NULL, handed_back_at = now()"
    " FROM unnest(CAST(:ids AS bigint[])) AS chosen(id)"
    " WHERE o.id = chosen.id"
)
# One primary-key lookup per chosen id (a LATERAL subquery with LIMIT 1, which PostgreSQL cannot turn into a join):
# `id = ANY(:ids)` let the planner, on statistics a mass hand-back had just made stale, read the partial shard index
# and test every row against the whole array: 34 s for 150,000 ids, past the statement timeout, against 0.2 s.
_UNPUBLISHED = text(
    """
    SELECT count(*) FROM unnest(CAST(:ids AS bigint[])) AS chosen(id)
    CROSS JOIN LATERAL (
        SELECT 1 FROM outbox_messages WHERE id = chosen.id AND published_at IS NULL LIMIT 1
    ) AS waiting
    """
)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which outbox rows to re-send: any of these booking ids or session ids, created in [since, until) (aware
    datetimes), of these event types; and, unless ``exact``, every later row of each chosen booking."""

    bookings: tuple[str, ...] = ()
    sessions: tuple[UUID, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()
    exact: bool = False

    @property
    def empty(self) -> bool:
        """True when no filter is set (``outbox republish`` then needs ``--all``)."""
        return not (self.bookings or self.sessions or self.types) and self.since is None and self.until is None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row as the command shows it (the payload is left in the database)."""

    id: int
    message_id: UUID
    booking_id: str
    type: str
    created_at: datetime
    published_at: datetime | None
    chosen: bool  # matched the selection (else: a later row of a chosen booking)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ids and times as strings (ISO 8601), ``published_at`` None while unpublished."""
        return {
            "id": self.id,
            "message_id": str(self.message_id),
            "type": self.type,
            "booking_id": self.booking_id,
            "created_at": self.created_at.isoformat(),
            "published_at": None if self.published_at is None else self.published_at.isoformat(),
            "chosen": self.chosen,
        }


@dataclass(frozen=True, slots=True)
class Republished:
    """What ``republish`` did with the rows it chose."""

    rows: list[OutboxRow]
    queued: int  # rows handed back to the relay
    published: int | None = None  # rows sent by this process (--relay), including other waiting rows


async def select(engine: AsyncEngine, selection: Selection) -> list[OutboxRow]:
    """The outbox rows ``selection`` chooses, in id order (the order the relay sends them); raises what the database
    raises."""
    params = {
        "bookings": list(selection.bookings),
        "sessions": list(selection.sessions),
        "since": selection.since,
        "until": selection.until,
        "types": list(selection.types),
        "exact": selection.exact,
    }
    async with engine.connect() as conn:
        result = await conn.execute(_SELECT, params)
        return [OutboxRow(r.id, r.message_id, r.key, r.type, r.created_at, r.published_at, r.chosen) for r in result]


async def queue(engine: AsyncEngine, rows: Sequence[OutboxRow]) -> int:
    """Hand the rows back to the relay (``published_at`` set to NULL), atomically with respect to every relay (see
    the module docstring); returns how many. Raises what the database raises, and then nothing changed."""
    ids = [r.id for r in rows]
    if not ids:
        return 0
    async with engine.begin() as conn:
        await conn.execute(_LOCK_RELAY, {"key": RELAY_LOCK})  # waits for a relay step in progress to finish
        await conn.execute(_RESET, {"ids": ids})
    return len(ids)


async def relay_now(
    engine: AsyncEngine, publisher: Publisher, rows: Sequence[OutboxRow], *, batch_rows: int, progress: Progress
) -> int:
    """Publish until every row is sent: by this process, or by the running service's relay if it leads; returns
    the rows this process sent (other waiting rows included).

    Steps the relay while it finds rows to send, and counts the chosen rows still unpublished only when it finds
    none (before, a count over every chosen id before each step: quadratic in the rows). Raises OperatorError when
    another relay holds the lock but no chosen row is published for RELAY_WAIT_S, and what the broker or the
    database raises."""
    ids = [r.id for r in rows]
    relay = OutboxRelay(engine, publisher, batch_rows=batch_rows)
    task = progress.add_task("publishing", total=len(ids))
    sent = 0
    remaining = len(ids)
    deadline = time.monotonic() + RELAY_WAIT_S
    while remaining:
        step = await relay.run_once()
        sent += step
        if step:
            progress.update(task, completed=min(sent, len(ids)))
            continue
        left = await _unpublished(engine, ids)  # nothing for this relay: sent, or another relay holds the lock
        if left < remaining:
            remaining, deadline = left, time.monotonic() + RELAY_WAIT_S
            progress.update(task, completed=len(ids) - remaining)
            continue
        if time.monotonic() > deadline:
            raise OperatorError(
                f"{remaining} rows still unpublished after {RELAY_WAIT_S:g} s: another relay holds the lock "
                "but does not publish (see `booking-sessions status`)"
            )
        await asyncio.sleep(0.2)
    progress.update(task, completed=len(ids))
    return sent


async def _unpublished(engine: AsyncEngine, ids: Sequence[int]) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(_UNPUBLISHED, {"ids": list(ids)}) or 0)


async def republish(
    settings: Settings, selection: Selection, *, dry_run: bool, relay: bool, progress: Progress
) -> tuple[list[OutboxRow], Republished | None]:
    """The rows chosen, and what was done with them (None: a dry run, nothing changed). ``relay``: also publish
    from this process (``relay_now``), else the running service's relay sends them.

    Raises OperatorError when the database, the broker (with ``relay``) or the output topic is not there as
    configured."""
    engine = create_engine(settings)
    publisher: Publisher | None = None
    try:
        await check_database(engine, settings.database_url_value())
        rows = await select(engine, selection)
        if dry_run:
            return rows, None
        if relay:
            if settings.kafka_bootstrap is None:
                raise OperatorError("BOOKING_KAFKA_BOOTSTRAP is not set: --relay publishes to the broker")
            options = kafka_client_options(settings)
            bootstrap = settings.kafka_bootstrap
            await topic_partitions(bootstrap, settings.output_topic, "BOOKING_OUTPUT_TOPIC", **options)
            publisher = await Publisher.start(bootstrap, client_id="booking-sessions-republish", **options)
        queued = await queue(engine, rows)
        if publisher is None:
            return rows, Republished(rows, queued)
        try:
            sent = await relay_now(engine, publisher, rows, batch_rows=settings.relay_batch_rows, progress=progress)
        except Exception as error:
            # Say what is left: the rows are handed back either way, and any relay sends them.
            why = one_line(error)
            if why is None:
                raise
            raise OperatorError(
                f"{queued} rows were handed back to the relay, but publishing them from here stopped: {why}; they "
                "wait in the outbox for the running service's relay (or run the same command again)"
            ) from error
        return rows, Republished(rows, queued, sent)
    finally:
        if publisher is not None:
            await close_within(publisher.stop(), "producer")
        await engine.dispose()
