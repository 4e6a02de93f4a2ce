"""Send selected dead letters back to the input topic, once the cause is fixed, so they apply exactly once.

The consumer recorded most dead letters in the inbox (outcome ``dead_lettered``): left there, the replayed copy
would be dropped as a duplicate of it. So, per chunk, in one transaction: delete those ``dead_lettered`` inbox rows
(same message id *and* same payload hash), publish the copies and wait for the broker's acks, then commit. The
service's consumer, meeting a copy while the delete is uncommitted, waits on the row lock and then applies it;
if the publish fails the delete rolls back and nothing changed. A copy applied once leaves an ``applied`` row, so
replaying again is a duplicate: this command skips it, and a copy sent anyway changes nothing.

Never replayed: ``message_id_conflict`` (the id was applied with another payload; the upstream must send a new
id) and any record whose message id the inbox holds with another payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from rich.progress import Progress
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.ops.dlq import DeadLetter, DlqFilter, scan
from booking_sessions.ops.failures import OperatorError, changes_begin, check_database, close_within, topic_partitions
from booking_sessions.service import create_engine
from booking_sessions.settings import Settings
from models.fields import rfc3339_utc
from models.records import DLQ_REPLAYED_AT, DLQ_REPLAYED_FROM, DLQ_VALUE_OMITTED, OutgoingRecord
from producer.publish import Publisher

Action = Literal["replay", "skip"]
CHUNK = 500  # dead letters per transaction: one delete, one round of sends

_INBOX_ROWS = text(
    "SELECT message_id, outcome, payload_sha256 FROM inbox_messages WHERE message_id = ANY(CAST(:ids AS uuid[]))"
)
_RESET_DEAD_LETTERED = text(
    """
    DELETE FROM inbox_messages i
    USING unnest(CAST(:ids AS uuid[]), CAST(:hashes AS text[])) AS r(message_id, payload_sha256)
    WHERE i.message_id = r.message_id AND i.payload_sha256 = r.payload_sha256 AND i.outcome = 'dead_lettered'
    RETURNING i.message_id
    """
)


@dataclass(frozen=True, slots=True)
class InboxRow:
    """What the inbox holds for one message id: its ``outcome`` and the SHA-256 (hex) of the payload it saw."""

    outcome: str
    payload_sha256: str


@dataclass(frozen=True, slots=True)
class Step:
    """One dead letter's fate: ``replay`` or ``skip``, with a note for the operator saying why."""

    letter: DeadLetter
    action: Action
    note: str
    reset_inbox: bool = False  # delete the dead_lettered inbox row first


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay did: every step planned, the copies the broker acknowledged, the inbox rows deleted."""

    steps: list[Step]
    published: int
    inbox_rows_reset: int

    @property
    def skipped(self) -> int:
        """How many steps were skips."""
        return sum(1 for s in self.steps if s.action == "skip")


def plan(letters: Sequence[DeadLetter], inbox: Mapping[UUID, InboxRow]) -> list[Step]:
    """Pure: what to do with each selected dead letter, given the inbox rows of their message ids; one ``Step`` per
    letter, in the letters' order.

    A second copy of the same message is skipped, and so are ``message_id_conflict``, a letter whose value the DLQ
    left out, and an id the inbox holds applied, ignored, or with another payload (CONTRACT, "What each event does":
    a message id is applied once)."""
    steps: list[Step] = []
    first_of: dict[tuple[UUID | None, bytes | None, str], DeadLetter] = {}
    for letter in letters:
        message_id = letter.message_id
        identity = (message_id, None if message_id is not None else letter.key, letter.payload_sha256)
        earlier = first_of.setdefault(identity, letter)
        if earlier is not letter:
            steps.append(Step(letter, "skip", f"same message as {earlier.position}, replayed once"))
            continue
        if letter.reason == "message_id_conflict":
            steps.append(Step(letter, "skip", "not replayable: its message id was applied with another payload"))
            continue
        omitted = letter.header(DLQ_VALUE_OMITTED)
        if omitted is not None:
            # The DLQ refused the copy whole: replaying it would send an empty value in its place.
            note = f"not replayable from the DLQ: its value ({omitted} bytes) was left out; it is at {letter.source}"
            steps.append(Step(letter, "skip", note))
            continue
        row = inbox.get(message_id) if message_id is not None else None
        if row is None:
            steps.append(Step(letter, "replay", "not in the inbox"))
        elif row.payload_sha256 != letter.payload_sha256:
            steps.append(Step(letter, "skip", "not replayable: the inbox holds its message id with another payload"))
        elif row.outcome == "dead_lettered":
            steps.append(Step(letter, "replay", "inbox row dead_lettered: reset, then replayed", reset_inbox=True))
        else:
            steps.append(Step(letter, "skip", f"already {row.outcome}: a replay would be a duplicate"))
    return steps


def replayed_record(letter: DeadLetter, input_topic: str, dlq_topic: str, replayed_at: datetime) -> OutgoingRecord:
    """The original key, value and headers, without the dlq-* headers (CONTRACT, "Dead letters"), plus
    ``dlq-replayed-at`` (RFC 3339, UTC) and ``dlq-replayed-from`` (``<dlq topic>/<partition>/<offset>``)."""
    headers = (
        *letter.original_headers(),
        (DLQ_REPLAYED_AT, rfc3339_utc(replayed_at).encode()),
        (DLQ_REPLAYED_FROM, f"{dlq_topic}/{letter.partition}/{letter.offset}".encode()),
    )
    return OutgoingRecord(input_topic, letter.key, letter.value, headers)


async def inbox_rows(engine: AsyncEngine, letters: Sequence[DeadLetter]) -> dict[UUID, InboxRow]:
    """The inbox rows of the letters' message ids (letters without one are left out), in one query; raises what
    the database raises."""
    ids = sorted({m for m in (letter.message_id for letter in letters) if m is not None})
    if not ids:
        return {}
    async with engine.connect() as conn:
        rows = (await conn.execute(_INBOX_ROWS, {"ids": ids})).all()
    return {row.message_id: InboxRow(row.outcome, row.payload_sha256) for row in rows}


async def execute(
    engine: AsyncEngine,
    publisher: Publisher,
    steps: Sequence[Step],
    *,
    input_topic: str,
    dlq_topic: str,
    replayed_at: datetime,
    progress: Progress,
) -> ReplayOutcome:
    """Publish the ``replay`` steps to ``input_topic``, ``CHUNK`` (500) per transaction: delete the chunk's
    ``dead_lettered`` inbox rows, send, wait for the acks, commit. Raises what the broker or the database raises;
    the chunk in hand then rolls back (its inbox rows stay), chunks before it stay done."""
    chosen = [s for s in steps if s.action == "replay"]
    task = progress.add_task("replaying dead letters", total=len(chosen))
    changes_begin()
    published = reset = 0
    for start in range(0, len(chosen), CHUNK):
        chunk = chosen[start : start + CHUNK]
        resets = [s.letter for s in chunk if s.reset_inbox]
        async with engine.begin() as conn:
            if resets:
                deleted = await conn.execute(
                    _RESET_DEAD_LETTERED,
                    {"ids": [r.message_id for r in resets], "hashes": [r.payload_sha256 for r in resets]},
                )
                reset += len(deleted.all())
            # Acked before the delete commits: a failed send rolls the delete back, and a consumer meeting a
            # copy early waits on the deleted row's lock instead of dropping the copy as a duplicate.
            records = [replayed_record(s.letter, input_topic, dlq_topic, replayed_at) for s in chunk]
            published += len(await publisher.send_all(records))
        progress.advance(task, len(chunk))
    return ReplayOutcome(list(steps), published, reset)


def check_positions(wanted: DlqFilter, letters: Iterable[DeadLetter], dlq_topic: str) -> None:
    """Pure: raises OperatorError naming each ``--offset`` that selected no dead letter (a typo must not read as
    "would replay 0" and exit 0)."""
    missing = sorted(wanted.positions - {(letter.partition, letter.offset) for letter in letters})
    if not missing:
        return
    where = ", ".join(f"{partition}:{offset}" for partition, offset in missing)
    other = " (or none that matches --reason/--since/--until)" if wanted.reasons or wanted.since or wanted.until else ""
    raise OperatorError(f"--offset {where}: no such dead letter in {dlq_topic}{other}; `dlq list` shows the positions")


async def replay_dead_letters(
    settings: Settings, wanted: DlqFilter, *, dry_run: bool, progress: Progress
) -> tuple[list[Step], ReplayOutcome | None]:
    """The plan for every selected dead letter, and what was done (None: a dry run, nothing changed).

    Raises OperatorError when the broker, the database or a topic is not there as configured (``failures``), and
    what the servers raise mid-way (see ``execute``)."""
    if settings.kafka_bootstrap is None:
        raise OperatorError("BOOKING_KAFKA_BOOTSTRAP is not set: dlq replay reads the DLQ topic")
    bootstrap = settings.kafka_bootstrap
    options = kafka_client_options(settings)
    engine = create_engine(settings)
    publisher: Publisher | None = None
    try:
        await check_database(engine, settings.database_url_value())
        await topic_partitions(bootstrap, settings.input_topic, "BOOKING_INPUT_TOPIC", **options)
        found = await scan(bootstrap, settings.dlq_topic, wanted.matches, progress, client_options=options)
        check_positions(wanted, found.letters, settings.dlq_topic)
        steps = plan(found.letters, await inbox_rows(engine, found.letters))
        if dry_run:
            return steps, None
        publisher = await Publisher.start(bootstrap, client_id="booking-sessions-dlq-replay", **options)
        outcome = await execute(
            engine,
            publisher,
            steps,
            input_topic=settings.input_topic,
            dlq_topic=settings.dlq_topic,
            replayed_at=datetime.now(UTC),
            progress=progress,
        )
        return steps, outcome
    finally:
        if publisher is not None:
            await close_within(publisher.stop(), "producer")
        await engine.dispose()
