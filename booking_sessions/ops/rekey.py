"""Re-key meeting links: move chosen (or all) scheduled sessions to rooms under the current meeting key version.

After a leaked BOOKING_MEETING_SECRET, a new secret alone changes only sessions created afterwards; every existing
room stays open to whoever holds the old key. This rewrites ``live_sessions.meeting_link`` under the current key
and, in the same transaction, writes a ``SessionUpdated`` with the new link to the outbox, which the relay
publishes, so the video service moves the room (CONTRACT, "Output"). Its ``message_id`` is UUIDv5 of the session
id and the key version (``consumer.ids.session_rekeyed_id``).

Bounded batches, each one short transaction that locks its sessions in ``booking_request_id`` order, the order
the consumer locks them in, so the two never deadlock; safe while the service runs. A session that already has
its link under the current key is left alone and gets no message, so a second run changes and sends nothing.
Only ``SCHEDULED`` sessions are re-keyed: no SessionUpdated after a cancellation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

from rich.console import RenderableType
from rich.progress import Progress
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.meeting import check_meeting_key, meeting_key
from booking_sessions.ops.failures import OperatorError, changes_begin, check_database, require_topics
from booking_sessions.ops.untrusted import line
from booking_sessions.service import create_engine
from booking_sessions.settings import Settings
from consumer.decide import Decision, OutboxRow, SessionRow
from consumer.ids import session_rekeyed_id
from consumer.store import lock_sessions, write_decisions

DEFAULT_BATCH_ROWS = 500
SAMPLE = 5  # session ids the summary names; the rest are counted (an --all run may move millions)

_CHOSEN = """
    status = 'SCHEDULED'
    AND (CAST(:everything AS boolean) OR booking_request_id = ANY(CAST(:bookings AS text[])))
"""
_COUNT = text(f"SELECT count(*) FROM live_sessions WHERE {_CHOSEN}")
_FOUND = text(f"SELECT booking_request_id FROM live_sessions WHERE {_CHOSEN}")
# FOR UPDATE re-checks the status under the lock: a session cancelled meanwhile drops out of the batch.
_LOCK_BATCH = text(
    f"""
    SELECT booking_request_id FROM live_sessions
    WHERE {_CHOSEN} AND booking_request_id > :after
    ORDER BY booking_request_id
    LIMIT :batch_rows
    FOR UPDATE
    """
)
_SET_LINKS = text(
    """
    UPDATE live_sessions s SET meeting_link = u.link, updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:links AS text[])) AS u(id, link)
    WHERE s.id = u.id
    """
)


@dataclass(frozen=True, slots=True)
class RekeyRequest:
    """Which sessions: ``bookings`` (booking ids), or every scheduled one when ``everything``."""

    bookings: tuple[str, ...] = ()
    everything: bool = False
    batch_rows: int = DEFAULT_BATCH_ROWS
    dry_run: bool = False


@dataclass(slots=True)
class RekeyResult:
    """What a re-key found and did (or, in a dry run, would do)."""

    key_version: int
    fingerprint: str
    dry_run: bool
    chosen: int = 0  # scheduled sessions selected when the run began
    scanned: int = 0  # of those, looked at under their lock
    rekeyed: int = 0  # links changed, each with one SessionUpdated in the outbox
    batches: int = 0
    missing: tuple[str, ...] = ()  # requested booking ids without a scheduled session
    key_recorded: bool = True  # False: a dry run on the key version's first use
    elapsed_s: float = 0.0
    sample: list[UUID] = field(default_factory=list)  # the first SAMPLE re-keyed session ids, for the report

    @property
    def current(self) -> int:
        """Sessions already under the current key: left alone, no message."""
        return self.scanned - self.rekeyed

    def as_dict(self) -> dict[str, Any]:
        """The summary for ``--json``."""
        return {
            "key_version": self.key_version,
            "fingerprint": self.fingerprint,
            "dry_run": self.dry_run,
            "chosen": self.chosen,
            "rekeyed": self.rekeyed,
            "already_current": self.current,
            "batches": self.batches,
            "missing": list(self.missing),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def rekey_messages(
    sessions: Iterable[SessionRow], link_for: Callable[[UUID], str], key_version: int, now: datetime
) -> list[OutboxRow]:
    """Pure: one SessionUpdated per session whose link differs from its link under the current key, carrying
    the session with its new link; none for a session already moved (the idempotence of a second run). Its message
    id derives from the session id and ``key_version`` (CONTRACT, "Output": re-keying after a leaked secret)."""
    messages = []
    for session in sessions:
        link = link_for(session.id)
        if link != session.meeting_link:
            moved = session._replace(meeting_link=link)
            messages.append(OutboxRow(session_rekeyed_id(session.id, key_version), "SessionUpdated", moved, now))
    return messages


async def _rekey_batch(
    conn: AsyncConnection, settings: Settings, request: RekeyRequest, link_for: Callable[[UUID], str], after: str
) -> tuple[list[str], list[OutboxRow]]:
    """Lock the next batch after booking id ``after``; move its links. Returns its booking ids and messages."""
    # Bounded waits: a batch that cannot get its locks fails alone, holding nothing; a rerun resumes.
    await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
    await conn.execute(text("SET LOCAL statement_timeout = '60s'"))
    params = {"everything": request.everything, "bookings": list(request.bookings)}
    found = await conn.execute(_LOCK_BATCH, {**params, "after": after, "batch_rows": request.batch_rows})
    booking_ids = [row.booking_request_id for row in found]
    sessions = await lock_sessions(conn, booking_ids)  # locked already: this reads their rows
    messages = rekey_messages(sessions.values(), link_for, settings.meeting_key_version, datetime.now(UTC))
    same_room = [m for m in messages if _room(m.row.meeting_link) == _room(sessions[m.row.booking_id].meeting_link)]
    if same_room:
        raise OperatorError(base_url_moved(same_room[0].row.booking_id, len(same_room), settings.meeting_key_version))
    if messages:
        ids, links = [m.row.id for m in messages], [m.row.meeting_link for m in messages]
        await conn.execute(_SET_LINKS, {"ids": ids, "links": links})
        await write_decisions(
            conn, [Decision(m.row.id, None, frozenset(), (m,)) for m in messages], settings.output_topic
        )
    return booking_ids, messages


def _room(link: str) -> str:
    return link.rpartition("/")[2]


def base_url_moved(booking_id: str, count: int, version: int) -> str:
    """The refusal of a re-key that would only change links' base URL: such a link keeps its room, and its
    SessionUpdated would carry the id of the re-key to this version (UUIDv5 of the session id and the key version,
    CONTRACT "Output"), which an earlier re-key may have used already: the outbox, and the video service, would
    drop it, and the row would change unannounced."""
    return (
        f"{count} session(s) in this batch, e.g. {line(booking_id)}, already have their room under key version "
        f"{version}: only BOOKING_MEETING_BASE_URL differs. A re-key announces a move under the key version's id, "
        "so it cannot announce this one: move rooms to a new base URL with a new key version "
        "(BOOKING_MEETING_KEY_VERSION and a new BOOKING_MEETING_SECRET). Nothing of this batch was written."
    )


async def rekey_sessions(
    engine: AsyncEngine, settings: Settings, request: RekeyRequest, progress: Progress
) -> RekeyResult:
    """Move the chosen scheduled sessions to the current key; see the module docstring.

    Raises ConfigurationError when the meeting secret is missing or does not fit its version (``meeting_keys``).
    """
    key = meeting_key(settings)
    recorded = await check_meeting_key(engine, key, record=not request.dry_run)
    result = RekeyResult(key.version, key.fingerprint, request.dry_run, key_recorded=recorded)
    started = time.monotonic()
    params = {"everything": request.everything, "bookings": list(request.bookings)}
    async with engine.connect() as conn:
        if request.everything:
            result.chosen = int(await conn.scalar(_COUNT, params) or 0)
        else:
            found = {row.booking_request_id for row in await conn.execute(_FOUND, params)}
            result.chosen = len(found)
            result.missing = tuple(sorted(set(request.bookings) - found))
    task = progress.add_task(f"re-keying to key version {key.version}", total=result.chosen)
    link_for = partial(key.link, settings.meeting_base_url)
    after = ""
    if not request.dry_run:
        changes_begin()
    while True:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            booking_ids, messages = await _rekey_batch(conn, settings, request, link_for, after)
            # A dry run computes under the same locks, then rolls back: nothing written, nothing sent.
            await (transaction.rollback() if request.dry_run else transaction.commit())
        if not booking_ids:
            break
        after = booking_ids[-1]
        result.batches += 1
        result.scanned += len(booking_ids)
        result.rekeyed += len(messages)
        result.sample.extend(m.row.id for m in messages[: SAMPLE - len(result.sample)])
        progress.update(task, completed=min(result.scanned, result.chosen))
    result.elapsed_s = time.monotonic() - started
    return result


async def rekey(settings: Settings, request: RekeyRequest, progress: Progress) -> RekeyResult:
    """``booking-sessions meeting rekey``: check the database, then ``rekey_sessions``.

    Raises OperatorError when the database cannot be reached or is not migrated, ConfigurationError as
    ``rekey_sessions``."""
    if settings.kafka_bootstrap is not None:
        # Its SessionUpdated rows name the output topic; the relay sends them there, wherever that is.
        topics = {"BOOKING_OUTPUT_TOPIC": settings.output_topic}
        await require_topics(settings.kafka_bootstrap, topics, **kafka_client_options(settings))
    engine = create_engine(settings)
    try:
        await check_database(engine, settings.database_url_value())
        return await rekey_sessions(engine, settings, request, progress)
    finally:
        await engine.dispose()


def rekey_report(result: RekeyResult) -> list[RenderableType]:
    """Pure: the summary lines the command prints, each an ``untrusted.line``: the missing booking ids are the
    operator's own input (or a file's lines), and no escape sequence or markup in them may reach the terminal."""
    key = f"key version {result.key_version} (fingerprint {result.fingerprint})"
    lines: list[RenderableType] = []
    if result.dry_run:
        lines.append(line(f"dry run: nothing was written or sent; re-key to {key}"))
        if not result.key_recorded:
            lines.append(
                line(f"version {result.key_version} is not on record yet: the real run records its fingerprint")
            )
    else:
        lines.append(line(f"re-key to {key}"))
    verb = "would get" if result.dry_run else "got"
    lines.append(
        line(
            f"scheduled sessions chosen {result.chosen}: {result.rekeyed} {verb} a new link and a SessionUpdated, "
            f"{result.current} already on version {result.key_version}"
        )
    )
    shown = ", ".join(str(s) for s in result.sample)
    if shown:
        more = f" and {result.rekeyed - len(result.sample)} more" if result.rekeyed > len(result.sample) else ""
        lines.append(line(f"sessions: {shown}{more}"))
    if result.missing:
        lines.append(line("no scheduled session for: ", ", ".join(result.missing)))
    if result.rekeyed and not result.dry_run:
        lines.append(
            line(
                "the SessionUpdated rows wait in the outbox: the running service's relay sends them "
                "(`booking-sessions status` shows the backlog)"
            )
        )
    lines.append(line(f"{result.batches} batch(es), took {result.elapsed_s:.1f} s"))
    return lines


def read_booking_file(lines: Sequence[str]) -> list[str]:
    """Booking ids from a file's lines: one per line; blank lines and ``#`` comments skipped."""
    return [stripped for line in lines if (stripped := line.split("#", 1)[0].strip())]
