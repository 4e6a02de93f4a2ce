"""One batch's writes, set-based: a handful of statements per transaction, whatever the batch size.

Every statement takes a whole batch, as one array per column (``unnest``) or as JSON rows (``rows_of``: the
inbox's), so a batch of thousands costs two round trips and the commit (the inbox with the session locks, then
everything the decisions write). Each round trip is a wait for the database, and on a busy machine a
wait for a core afterwards too: fewer of them is less latency. The session upsert is still guarded in SQL, by the
snapshot version and by the cancellation: the pure decision is made under a row lock, and the guards keep the row
right even against a writer that does not take it (an older snapshot never overwrites a newer one, and nothing
makes a CANCELLED row SCHEDULED again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, TypeVar
from uuid import UUID

from pydantic_core import to_json
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.decide import Cancellation, Decision, SessionDetails, SessionRow
from models.errors import Transient
from models.fields import PreciseDatetime, beyond_microseconds
from models.records import Decoded
from models.trace_context import TraceContext


# The inbox's rows go to PostgreSQL as one JSON text, an array of arrays, not as one array parameter per column:
# asyncpg checks every element of an array parameter against collections.abc's Iterable, then Sized (a call into
# Python each). For the inbox's nine columns that cost this process 1.45 µs a record, against 0.3 µs for
# pydantic-core's JSON encoder, while PostgreSQL's share went from 0.6 to 0.8 µs (jsonb parses the text once,
# then each field is read by position): 1,000-row statements, client and server CPU (issue 15). The other
# statements keep their arrays: the session upsert as JSON saved this process 1.0 µs a record and cost PostgreSQL
# 1.5, the learners and outbox rows saved nothing (`python -m bench.applypath`, alternated runs).
def rows_of(parameter: str, columns: Sequence[tuple[str, str]]) -> str:
    """SQL: the rows of the JSON array of arrays in ``:parameter`` (``as_json``), as a subquery with one column
    per ``(name, SQL type)`` of ``columns``, read by position. JSON null is SQL NULL."""
    fields = ", ".join(f"CAST(r->>{i} AS {kind}) AS {name}" for i, (name, kind) in enumerate(columns))
    return f"(SELECT {fields} FROM jsonb_array_elements(CAST(CAST(:{parameter} AS text) AS jsonb)) AS r)"


def as_json(rows: Iterable[Sequence[object]]) -> str:
    """The parameter ``rows_of`` reads: each row's values (str, int, UUID, aware datetime or None) in its columns'
    order. Raises pydantic_core.PydanticSerializationError for a value JSON cannot carry."""
    return to_json(list(rows)).decode()


_INBOX_COLUMNS = (
    ("message_id", "uuid"), ("event_type", "text"), ("booking_id", "text"), ("payload_sha256", "text"),
    ("outcome", "text"), ("dlq_reason", "text"), ("topic", "text"), ("partition", "integer"), ('"offset"', "bigint"),
)  # fmt: skip
_INBOX_ROW = attrgetter(
    "message_id", "event_type", "booking_id", "payload_sha256", "outcome", "reason",
    "record.topic", "record.partition", "record.offset",
)  # fmt: skip

# Every lookup of existing rows by the batch's keys, here and below, goes through a unique index, written as a
# LATERAL subquery with LIMIT 1 (which PostgreSQL cannot turn into a join) rather than a join: asyncpg prepares each
# statement once per connection, PostgreSQL may then keep a generic plan, and a service that starts on a new
# database gets one planned for empty tables. For a join, that plan hashes the batch and scans the whole table, on
# every call for as long as the plan is kept (until an ANALYZE of the table): a cost that grows with the table. A
# lookup per row is what any plan of a LATERAL LIMIT 1 on a unique key does, empty table or not
# (tests/integration/test_plans_on_empty_tables.py).
#
# The batch's inbox rows (``incoming``), those the insert added, and the ids that were there already (``repeats``),
# each repeat then with its recorded hash (``_WITH_RECORDED_HASHES``): the two statements below share them.
_INBOX_CTES = f"""
    incoming AS (
        SELECT * FROM {rows_of("rows", _INBOX_COLUMNS)} AS u
    ), inserted AS (
        INSERT INTO inbox_messages
            (message_id, event_type, booking_id, payload_sha256, outcome, dlq_reason, topic, partition, "offset")
        SELECT * FROM incoming
        ON CONFLICT (message_id) DO NOTHING
        RETURNING message_id, booking_id, outcome
    ), repeats AS MATERIALIZED (
        -- First the few ids that were there already, then a lookup for each of them only.
        SELECT message_id FROM incoming WHERE message_id NOT IN (SELECT message_id FROM inserted)
    )"""
_WITH_RECORDED_HASHES = """
    FROM repeats r
    LEFT JOIN LATERAL (
        SELECT payload_sha256 FROM inbox_messages WHERE message_id = r.message_id LIMIT 1
    ) AS i ON true"""

# Returns the ids that were already there (the repeats, usually few), not the thousands that were new, each with its
# recorded payload hash: the check of a repeat's bytes needs no second round trip. A row committed after this
# statement's snapshot (by a transaction it waited for on the conflict) is not visible here: its hash is NULL.
_INSERT_INBOX = text(f"WITH {_INBOX_CTES} SELECT r.message_id, i.payload_sha256 {_WITH_RECORDED_HASHES}")

# A session row as the decision reads it, by position (lock_sessions), with each column's type.
_SESSION_COLUMNS = (
    ("id", "uuid"), ("booking_request_id", "text"), ("instructor_id", "text"), ("student_id", "text"),
    ("title", "text"), ("scheduled_start", "timestamptz"), ("duration_minutes", "integer"), ("meeting_link", "text"),
    ("snapshot_occurred_at", "timestamptz"), ("snapshot_message_id", "uuid"), ("cancelled_at", "timestamptz"),
    ("cancellation_message_id", "uuid"), ("cancellation_reason", "text"),
    ("snapshot_occurred_at_beyond_us", "text"), ("cancelled_at_beyond_us", "text"),
)  # fmt: skip
_SESSION_ROW = ", ".join(f"s.{name}" for name, _ in _SESSION_COLUMNS)
# Each row of ``asked`` (booking ids, in the lock order) with its session row, locked as it is found.
_LOCKED_SESSIONS = """
    CROSS JOIN LATERAL (
        SELECT * FROM live_sessions WHERE booking_request_id = asked.booking_id LIMIT 1 FOR UPDATE
    ) AS s"""

# _INSERT_INBOX and _LOCK_SESSIONS in one round trip (the batch path's first statement; the two apart took one
# more wait for PostgreSQL and for a core per transaction: (h2) p99 median 587 against 723 ms over eight pairs on a
# busy machine). The rows: first the repeats (``is_repeat``: message id, recorded hash, as _INSERT_INBOX returns
# them), then the session rows in _LOCK_SESSIONS's fifteen columns. Locked are the sessions of the bookings that
# have an applied record the insert added (a repeat changes nothing, a dead-lettered record has no event): the
# bookings the caller decides for. Order, as every writer locks (lock_sessions): by booking id in byte order
# (COLLATE "C", Python's sorted() over str; booking ids are ASCII), one lookup of the unique index each, after the
# insert (the Append reads its first branch, which runs the insert, before the second: a transaction never holds a
# session lock while it waits for another's inbox row).
_INSERT_INBOX_AND_LOCK = text(
    f"""
    WITH {_INBOX_CTES}, asked AS MATERIALIZED (
        SELECT booking_id FROM inserted WHERE outcome = 'applied' AND booking_id IS NOT NULL
        GROUP BY booking_id ORDER BY booking_id COLLATE "C"
    )
    SELECT true AS is_repeat, r.message_id, i.payload_sha256,
           {", ".join(f"NULL::{kind}" for _, kind in _SESSION_COLUMNS)}
    {_WITH_RECORDED_HASHES}
    UNION ALL
    SELECT false, NULL, NULL, {_SESSION_ROW}
    FROM asked {_LOCKED_SESSIONS}
    """
)

_INBOX_HASHES = text(
    "SELECT i.message_id, i.payload_sha256 FROM unnest(CAST(:ids AS uuid[])) AS asked(message_id) CROSS JOIN LATERAL"
    " (SELECT message_id, payload_sha256 FROM inbox_messages WHERE message_id = asked.message_id LIMIT 1) AS i"
)

# One lookup of the unique index per booking id (see _INSERT_INBOX), each row locked as it is found, in the order of
# the ids (sorted by the caller: the lock order). With `= ANY(:ids)` instead, the plan kept from an empty table was
# a sequential scan testing every row against the whole array: on PostgreSQL 15, 29 ms a call for 200 ids once the
# table held 12,000 sessions, where this takes 0.7 ms whatever the plan (PostgreSQL 15 and 18).
_LOCK_SESSIONS = text(
    f"SELECT {_SESSION_ROW} FROM unnest(CAST(:booking_ids AS text[])) AS asked(booking_id) {_LOCKED_SESSIONS}"
)

# The row shows the newest snapshot ... (each instant exact: the timestamp to the microsecond, then the digits past
# it, which order as text byte by byte: models.fields.PreciseDatetime)
_NEWER = (
    '(s.snapshot_occurred_at, s.snapshot_occurred_at_beyond_us COLLATE "C", s.snapshot_message_id)'
    ' < (EXCLUDED.snapshot_occurred_at, EXCLUDED.snapshot_occurred_at_beyond_us COLLATE "C",'
    " EXCLUDED.snapshot_message_id)"
)
# ... and the earliest cancellation (consumer/decide.py, Cancellation); a row without one takes any.
_EARLIER_CANCELLATION = (
    "EXCLUDED.cancelled_at IS NOT NULL AND (s.cancelled_at IS NULL"
    ' OR (EXCLUDED.cancelled_at, EXCLUDED.cancelled_at_beyond_us COLLATE "C", EXCLUDED.cancellation_message_id)'
    ' < (s.cancelled_at, s.cancelled_at_beyond_us COLLATE "C", s.cancellation_message_id))'
)
_SNAPSHOT_COLUMNS = (
    "instructor_id", "student_id", "title", "scheduled_start", "duration_minutes",
    "snapshot_occurred_at", "snapshot_occurred_at_beyond_us", "snapshot_message_id",
)  # fmt: skip
_CANCELLATION_COLUMNS = ("cancelled_at", "cancelled_at_beyond_us", "cancellation_message_id", "cancellation_reason")
_SET_SNAPSHOT = ", ".join(f"{c} = CASE WHEN {_NEWER} THEN EXCLUDED.{c} ELSE s.{c} END" for c in _SNAPSHOT_COLUMNS)
_SET_CANCELLATION = ", ".join(
    f"{c} = CASE WHEN {_EARLIER_CANCELLATION} THEN EXCLUDED.{c} ELSE s.{c} END" for c in _CANCELLATION_COLUMNS
)

# A transaction's writes after its decisions, in one statement: the session rows, the learners (participants and
# reservations), the reservations of the sessions it cancels and the outbox rows. One round trip instead of two
# (the session upsert alone, then the rest): each is a wait for a PostgreSQL backend and, on a busy machine, for a
# core afterwards, in every part of every batch. Returns the booking ids of the session rows it inserted, to check
# the decisions that expected to insert (write_decisions raises StaleDecision then: nothing of the transaction
# commits).
#
# The sub-statements of one statement all see the database as it was before it, and none sees another's rows; so
# no row is written twice: the reservations a cancellation closes (``closed``) leave out those the learners'
# upsert writes, and what was read "after the upsert" is read from the upsert's RETURNING (``written``).
#
# The session upsert is guarded by the snapshot version and by the cancellation (_NEWER, _EARLIER_CANCELLATION), and
# a CANCELLED row stays CANCELLED whatever the writer believes. A reservation only ever goes from CONFIRMED to
# CANCELLED, never back, and one whose session is CANCELLED once this statement ends (the upsert cancelled it, kept
# it so, or left a cancelled row alone) is written CANCELLED. Nothing is announced after a cancellation: a
# SessionUpdated decided on a stale view of a row that is CANCELLED by now (a writer without the row lock) is
# dropped, by the row as the upsert left it (or as it was, when the upsert left it alone).
_WRITE_DECISIONS = text(
    f"""
    WITH written AS (
        INSERT INTO live_sessions AS s
            (id, booking_request_id, instructor_id, student_id, title, scheduled_start, duration_minutes,
             status, meeting_link, snapshot_occurred_at, snapshot_message_id,
             cancelled_at, cancellation_message_id, cancellation_reason,
             snapshot_occurred_at_beyond_us, cancelled_at_beyond_us)
        SELECT u.id, u.booking_id, u.instructor_id, u.student_id, u.title, u.scheduled_start, u.duration_minutes,
               CASE WHEN u.cancelled_at IS NULL THEN 'SCHEDULED' ELSE 'CANCELLED' END,
               u.meeting_link, u.occurred_at, u.message_id,
               u.cancelled_at, u.cancellation_message_id, u.cancellation_reason,
               u.occurred_at_beyond_us, u.cancelled_at_beyond_us
        FROM unnest(
            CAST(:id AS uuid[]), CAST(:booking_id AS text[]), CAST(:instructor_id AS text[]),
            CAST(:student_id AS text[]), CAST(:title AS text[]), CAST(:scheduled_start AS timestamptz[]),
            CAST(:duration_minutes AS integer[]), CAST(:meeting_link AS text[]),
            CAST(:occurred_at AS timestamptz[]), CAST(:message_id AS uuid[]),
            CAST(:cancelled_at AS timestamptz[]), CAST(:cancellation_message_id AS uuid[]),
            CAST(:cancellation_reason AS text[]), CAST(:occurred_at_beyond_us AS text[]),
            CAST(:cancelled_at_beyond_us AS text[]))
            AS u(id, booking_id, instructor_id, student_id, title, scheduled_start, duration_minutes,
                 meeting_link, occurred_at, message_id, cancelled_at, cancellation_message_id, cancellation_reason,
                 occurred_at_beyond_us, cancelled_at_beyond_us)
        ON CONFLICT (booking_request_id) DO UPDATE SET
            {_SET_SNAPSHOT},
            {_SET_CANCELLATION},
            -- Cancellation is final: whatever this writer believes, a CANCELLED row stays CANCELLED.
            status = CASE WHEN EXCLUDED.status = 'CANCELLED' THEN 'CANCELLED' ELSE s.status END,
            updated_at = now()
        WHERE ({_NEWER}) OR ({_EARLIER_CANCELLATION})
        RETURNING s.id, s.booking_request_id, s.status, xmax = 0 AS inserted
    ), learners AS MATERIALIZED (
        -- The session's status as this statement leaves it: as the upsert wrote it, else as it is (looked up only
        -- for the few learners of a session the upsert left alone: COALESCE stops at its first non-null argument).
        SELECT l.session_id, l.user_id,
               CASE WHEN coalesce(w.status, (SELECT status FROM live_sessions WHERE id = l.session_id LIMIT 1))
                         = 'CANCELLED'
                    THEN 'CANCELLED' ELSE l.status END AS status
        FROM unnest(CAST(:learner_session_id AS uuid[]), CAST(:learner_id AS text[]), CAST(:learner_status AS text[]))
            AS l(session_id, user_id, status)
        LEFT JOIN written w ON w.id = l.session_id
    ), participants AS (
        INSERT INTO session_participants (session_id, user_id, role)
        SELECT session_id, user_id, 'LEARNER' FROM learners
        ON CONFLICT (session_id, user_id) DO NOTHING
    ), reserved AS (
        -- A CONFIRMED learner's reservation is only ever added: one that exists (CONFIRMED or CANCELLED) stays as it
        -- is. DO NOTHING leaves it untouched, where DO UPDATE would lock (and WAL-log) every existing row, updated
        -- or not: in a live stream most confirmations repeat one the row has.
        INSERT INTO session_reservations (session_id, learner_id, status)
        SELECT session_id, user_id, status FROM learners WHERE status = 'CONFIRMED'
        ON CONFLICT (session_id, learner_id) DO NOTHING
    ), reservations_cancelled AS (
        INSERT INTO session_reservations AS r (session_id, learner_id, status)
        SELECT session_id, user_id, status FROM learners WHERE status = 'CANCELLED'
        ON CONFLICT (session_id, learner_id) DO UPDATE SET status = 'CANCELLED' WHERE r.status <> 'CANCELLED'
    ), closed AS (
        UPDATE session_reservations r SET status = 'CANCELLED'
        FROM written w
        WHERE r.session_id = w.id AND w.status = 'CANCELLED' AND r.status <> 'CANCELLED'
          AND NOT EXISTS (SELECT FROM learners l WHERE l.session_id = r.session_id AND l.user_id = r.learner_id)
    ), announced AS (
        INSERT INTO outbox_messages (message_id, topic, key, payload, traceparent, tracestate)
        SELECT u.message_id, u.topic, u.key, u.payload, u.traceparent, u.tracestate
        FROM unnest(
            CAST(:outbox_message_id AS uuid[]), CAST(:topic AS text[]), CAST(:key AS text[]),
            CAST(:payload AS text[]), CAST(:kind AS text[]), CAST(:traceparent AS text[]),
            CAST(:tracestate AS text[]))
            AS u(message_id, topic, key, payload, kind, traceparent, tracestate)
        LEFT JOIN written w ON u.kind = 'SessionUpdated' AND w.booking_request_id = u.key
        LEFT JOIN LATERAL (
            -- Conditions on the outer row inside the subquery: they gate the lookup, which a join condition
            -- would only filter after it, so only a SessionUpdated whose row the upsert left alone looks.
            SELECT status FROM live_sessions
            WHERE u.kind = 'SessionUpdated' AND w.booking_request_id IS NULL AND booking_request_id = u.key
            LIMIT 1
        ) AS s ON true
        WHERE coalesce(w.status, s.status) IS DISTINCT FROM 'CANCELLED'
        ON CONFLICT (message_id) DO NOTHING
    )
    SELECT booking_request_id FROM written WHERE inserted
    """
)


async def insert_inbox(conn: AsyncConnection, rows: Sequence[Decoded]) -> dict[UUID, str | None]:
    """Insert one inbox row per record (each has a message id; CONTRACT "Rows": inbox_messages), in one statement;
    return the message ids that were there already (repeats of earlier messages), whose rows are left as they were,
    each with its recorded payload SHA-256 (hex), or None for a row the statement could not see (committed after it
    began: ask ``inbox_hashes``). Raises what the database raises (the caller's transaction is then lost)."""
    if not rows:
        return {}
    result = await conn.execute(_INSERT_INBOX, _inbox_columns(rows))
    return {row[0]: row[1] for row in result}


def _inbox_columns(rows: Sequence[Decoded]) -> dict[str, str]:
    """The inbox statements' parameter: one JSON array per record, in ``_INBOX_COLUMNS``'s order."""
    return {"rows": as_json(map(_INBOX_ROW, rows))}


async def insert_inbox_and_lock(
    conn: AsyncConnection, rows: Sequence[Decoded]
) -> tuple[dict[UUID, str | None], dict[str, SessionRow]]:
    """``insert_inbox`` and ``lock_sessions`` in one statement: the repeats as ``insert_inbox`` returns them, and
    the session rows of the bookings that have a new applied record among ``rows``, locked (FOR UPDATE) in
    booking id order, held until the transaction ends (CONTRACT "Rows": inbox_messages, one row per message id;
    "What each event does": the effects are decided under the session's lock). Raises what the database raises
    (the caller's transaction is then lost)."""
    if not rows:
        return {}, {}
    result = await conn.execute(_INSERT_INBOX_AND_LOCK, _inbox_columns(rows))
    repeats: dict[UUID, str | None] = {}
    sessions: list[tuple[Any, ...]] = []
    for row in result:
        if row[0]:
            repeats[row[1]] = row[2]
        else:
            sessions.append(tuple(row)[3:])
    return repeats, _session_rows(sessions)


async def inbox_hashes(conn: AsyncConnection, message_ids: Iterable[UUID]) -> dict[UUID, str]:
    """The recorded payload SHA-256 (hex) of each of ``message_ids`` that the inbox holds; absent ids are left out."""
    ids = list(message_ids)
    if not ids:
        return {}
    result = await conn.execute(_INBOX_HASHES, {"ids": ids})
    return {row[0]: row[1] for row in result}


# Not a dead-lettered row: `dlq replay` deletes those and sends their copies, committing only after the broker's
# acks, and this plain read (no lock, outside any transaction of the batch) still sees a row whose delete is not
# committed. Counted here as a repeat, the copy was dropped, and once the delete committed the event was applied
# nowhere (a newcomer's find). A copy of a dead-lettered record goes the batch's way instead: its inbox insert waits
# for the replay's transaction, then applies it, or (no replay) meets the row and is judged a repeat there.
_KNOWN_PAYLOADS = text(
    """
    SELECT i.message_id, i.payload_sha256
    FROM unnest(CAST(:ids AS uuid[]), CAST(:digests AS text[])) AS u(message_id, payload_sha256)
    CROSS JOIN LATERAL (
        SELECT message_id, payload_sha256 FROM inbox_messages
        WHERE message_id = u.message_id AND payload_sha256 = u.payload_sha256 AND outcome <> 'dead_lettered'
        LIMIT 1
    ) AS i
    """
)


async def known_payloads(conn: AsyncConnection, pairs: Sequence[tuple[UUID, str]]) -> set[tuple[UUID, str]]:
    """Which of ``pairs`` (message id, hex payload SHA-256) the inbox already holds, both equal, applied or ignored:
    byte-identical repeats, skipped without decoding. One statement, outside any transaction of the batch; a
    dead-lettered row is never counted (see _KNOWN_PAYLOADS)."""
    if not pairs:
        return set()
    result = await conn.execute(_KNOWN_PAYLOADS, {"ids": [p[0] for p in pairs], "digests": [p[1] for p in pairs]})
    return {(row[0], row[1]) for row in result}


async def lock_sessions(conn: AsyncConnection, booking_ids: Iterable[str]) -> dict[str, SessionRow]:
    """booking id -> its current session row (bookings without one are left out), each row locked (``FOR UPDATE``)
    until the transaction ends so the decision cannot go stale; locked in booking id order, as every writer does,
    so two transactions never deadlock on them."""
    ids = sorted(set(booking_ids))  # one lock order for every writer: no deadlock between two of them
    if not ids:
        return {}
    result = await conn.execute(_LOCK_SESSIONS, {"booking_ids": ids})
    return _session_rows(tuple(row) for row in result)


def _session_rows(rows: Iterable[tuple[Any, ...]]) -> dict[str, SessionRow]:
    """booking id -> SessionRow, from rows of _LOCK_SESSIONS's fifteen columns."""
    sessions = {}
    # Unpacked by position, in _LOCK_SESSIONS's column order: a live stream locks a row for most events, and reading
    # fifteen columns by name (a key lookup in SQLAlchemy's Row each) took about twice the CPU of unpacking them.
    for (
        sid, booking_id, instructor_id, student_id, title, scheduled_start, duration_minutes, meeting_link,
        occurred_at, message_id, cancelled_at, cancellation_message_id, cancellation_reason,
        occurred_at_beyond_us, cancelled_at_beyond_us,
    ) in rows:  # fmt: skip
        if scheduled_start.tzinfo is None or occurred_at.tzinfo is None or (cancelled_at and not cancelled_at.tzinfo):
            scheduled_start, occurred_at = _from_infinity(scheduled_start), _from_infinity(occurred_at)
            cancelled_at = _from_infinity(cancelled_at)
        if occurred_at_beyond_us or cancelled_at_beyond_us:  # instants finer than a microsecond: rare
            occurred_at = PreciseDatetime.of(occurred_at, occurred_at_beyond_us)
            if cancelled_at is not None:
                cancelled_at = PreciseDatetime.of(cancelled_at, cancelled_at_beyond_us)
        details = SessionDetails(instructor_id, student_id, title, scheduled_start, duration_minutes)
        cancellation = None
        if cancelled_at is not None:
            cancellation = Cancellation(cancelled_at, cancellation_message_id, cancellation_reason)
        sessions[booking_id] = SessionRow(
            sid, booking_id, details, meeting_link, (occurred_at, message_id), cancellation
        )
    return sessions


_Moment = TypeVar("_Moment", datetime, datetime | None)


def _from_infinity(moment: _Moment) -> _Moment:
    """A timestamp as read, aware. asyncpg reads PostgreSQL's -infinity and infinity as the naive ``datetime.min``
    and ``datetime.max``, which no comparison with an aware datetime survives; an earlier release stored an event's
    0001-01-01T00:00:00Z that way (models/fields.py refuses it now). In UTC they are the same instants, and asyncpg
    writes them back as the same infinities."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class StaleDecision(Transient):
    """A session row appeared between the lock and the write (a writer that did not wait for our lock, such as
    a consumer that lost its partition but not yet its batch): the decision assumed no row and may announce the
    wrong thing. Retried: the next attempt locks the row and decides again."""


async def write_decisions(
    conn: AsyncConnection,
    decisions: Sequence[Decision],
    output_topic: str,
    causes: Mapping[UUID, TraceContext] | None = None,
) -> None:
    """Write the decisions of one transaction in one statement (``_WRITE_DECISIONS``): the session rows, the
    learners' participants and reservations, the reservations of the sessions it cancels, the outbox rows
    (CONTRACT "Rows", "What each event does", "Output").

    ``causes`` maps the message id of an input event to its trace context: each outbox row stores its cause's
    (``OutboxRow.cause``), for the relay to continue that trace (CONTRACT "Output"); None or empty: no tracing.

    Raises StaleDecision when a decision made for a new row met an existing one (see there): nothing of the
    transaction may then commit."""
    sessions = [d.session for d in decisions if d.session is not None]
    learners = sorted(
        {(d.session_id, student, d.cancelled) for d in decisions for student in d.learners},
        # Lock order, as every writer: by session id (a UUID's int orders as its text and as PostgreSQL's uuid),
        # then user.
        key=lambda learner: (learner[0].int, learner[1]),
    )
    outbox = [row for d in decisions for row in d.outbox]
    if not sessions and not learners and not outbox:
        return
    contexts: list[TraceContext | None] = [None] * len(outbox)
    if causes:  # else tracing is off: nothing per row
        contexts = [None if o.cause is None else causes.get(o.cause) for o in outbox]
    cancellations = [s.cancellation for s in sessions]
    inserted = await conn.execute(
        _WRITE_DECISIONS,
        {
            "id": [s.id for s in sessions],
            "booking_id": [s.booking_id for s in sessions],
            "instructor_id": [s.details.instructor_id for s in sessions],
            "student_id": [s.details.student_id for s in sessions],
            "title": [s.details.title for s in sessions],
            "scheduled_start": [s.details.scheduled_start for s in sessions],
            "duration_minutes": [s.details.duration_minutes for s in sessions],
            "meeting_link": [s.meeting_link for s in sessions],
            "occurred_at": [s.version[0] for s in sessions],
            "message_id": [s.version[1] for s in sessions],
            "cancelled_at": [c.cancelled_at if c else None for c in cancellations],
            "cancellation_message_id": [c.message_id if c else None for c in cancellations],
            "cancellation_reason": [c.reason if c else None for c in cancellations],
            "occurred_at_beyond_us": [beyond_microseconds(s.version[0]) for s in sessions],
            "cancelled_at_beyond_us": [beyond_microseconds(c.cancelled_at) if c else "" for c in cancellations],
            "learner_session_id": [s for s, _, _ in learners],
            "learner_id": [u for _, u, _ in learners],
            "learner_status": ["CANCELLED" if cancelled else "CONFIRMED" for _, _, cancelled in learners],
            "outbox_message_id": [o.message_id for o in outbox],
            "topic": [output_topic] * len(outbox),
            "key": [o.key for o in outbox],
            "payload": [o.payload() for o in outbox],
            "kind": [o.kind for o in outbox],
            "traceparent": [c.traceparent if c else None for c in contexts],
            "tracestate": [c.tracestate if c else None for c in contexts],
        },
    )
    expected = {d.session.booking_id for d in decisions if d.first_write and d.session is not None}
    if expected:
        missing = expected - {row[0] for row in inserted}
        if missing:
            raise StaleDecision(f"session rows appeared while deciding: {sorted(missing)[:5]}")
