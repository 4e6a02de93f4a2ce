"""What the peer (c2) must have left behind, in the terms of the bench's checks.

Its outbox is faststream-outbox's table, whose rows the relay deletes once published: what it announced is read
back from its output topic instead of from ``outbox_messages``. Its session rows are compared with the service's
for the same bookings.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence

from aiokafka import ConsumerRecord
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.databases import Rows


def announced(records: Iterable[ConsumerRecord[bytes, bytes]]) -> dict[str, set[str]]:
    """Output records -> the distinct message ids of each message type (a re-sent copy counts once), and under
    ``"keys"`` every booking id that was announced at all."""
    found: dict[str, set[str]] = {"SessionCreated": set(), "SessionUpdated": set(), "SessionCancelled": set()}
    keys: set[str] = set()
    for r in records:
        if r.value is None:
            continue
        message = json.loads(r.value)
        found.setdefault(message["type"], set()).add(message["message_id"])
        keys.add(message["booking_id"])
    found["keys"] = keys
    return found


def topic_rows(counted: Rows, published: Sequence[ConsumerRecord[bytes, bytes]], cancelled: Iterable[str]) -> Rows:
    """``counted`` (from ``databases.rows``, whose outbox counts are empty for the peer) with its announcements
    taken from the output topic: ``cancelled``, the booking ids of the CANCELLED sessions, tell which of those
    were never announced. ``unpublished`` is kept: the caller counts it from faststream-outbox's table."""
    seen = announced(published)
    unannounced = sum(1 for booking in cancelled if booking not in seen["keys"])
    return dataclasses.replace(
        counted,
        session_created=len(seen["SessionCreated"]),
        session_updated=len(seen["SessionUpdated"]),
        session_cancelled=len(seen["SessionCancelled"]),
        unannounced=unannounced,
    )


async def cancelled_bookings(url: str) -> list[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT booking_request_id FROM live_sessions WHERE status = 'CANCELLED'"))
            return [row[0] for row in result]
    finally:
        await engine.dispose()


# Every column a user of the rows sees (not the bookkeeping: created_at, updated_at, the snapshot version), with
# each session's participants and reservations, in one digest.
_DIGEST = text(
    """
    SELECT count(*), md5(string_agg(line, E'\\n' ORDER BY line)) FROM (
        SELECT concat_ws('|', s.booking_request_id, s.id, s.status, s.instructor_id, s.student_id, s.title,
                         s.scheduled_start, s.duration_minutes, s.meeting_link, s.cancelled_at, s.cancellation_reason,
                         (SELECT string_agg(p.user_id || ':' || p.role, ',' ORDER BY p.user_id)
                          FROM session_participants p WHERE p.session_id = s.id),
                         (SELECT string_agg(r.learner_id || ':' || r.status, ',' ORDER BY r.learner_id)
                          FROM session_reservations r WHERE r.session_id = s.id)) AS line
        FROM live_sessions s WHERE s.booking_request_id = ANY(:ids)
    ) AS sessions
    """
)


async def sessions_digest(url: str, booking_ids: Sequence[str]) -> tuple[int, str]:
    """(sessions, md5 of their user-visible columns with participants and reservations) for ``booking_ids``."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            count, digest = (await conn.execute(_DIGEST, {"ids": list(booking_ids)})).one()
    finally:
        await engine.dispose()
    return int(count), str(digest)
