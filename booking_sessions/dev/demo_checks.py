"""What ``booking-sessions demo`` reads back after its run, prints, and checks against the CONTRACT."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from aiokafka import ConsumerRecord
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.dev.demo_scenario import REASON, Scenario
from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from consumer.ids import session_cancelled_id, session_created_id, session_id
from models.records import DLQ_REASON

Records = list[ConsumerRecord[bytes, bytes]]


@dataclass(frozen=True)
class Check:
    """One line of the demo's verdict: ``ok`` is PASS or FAIL, ``detail`` what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Outcome:
    """The demo bookings' rows and the demo topics' records, read after the service stopped."""

    sessions: Sequence[Any]  # live_sessions rows, by booking id
    learners: Sequence[Any]  # booking id, participant user_id and role, reservation status
    inbox: dict[str, int]  # inbox rows of the demo's input topic, by outcome
    output: Records  # session events read back from the output topic
    dlq: Records  # dead letters read back from the DLQ topic


async def read_outcome(engine: AsyncEngine, settings: Settings, scenario: Scenario, kafka: dict[str, Any]) -> Outcome:
    """Rows from ``engine`` and records from the demo's topics (``kafka``: the client options, TLS/SASL).

    Waits (``read_topic``: up to 30 s each) for as many output records as the outbox has rows for the demo's
    bookings and for one dead letter; what did not arrive by then is missing from the outcome, and a check fails.
    """
    s = settings
    assert s.kafka_bootstrap is not None
    ids = list(scenario.bookings.values())
    async with engine.connect() as conn:
        sessions = (
            await conn.execute(
                text("SELECT * FROM live_sessions WHERE booking_request_id = ANY(:ids) ORDER BY booking_request_id"),
                {"ids": ids},
            )
        ).all()
        learners = (
            await conn.execute(
                text(
                    """
                    SELECT s.booking_request_id, p.user_id, p.role, r.status
                    FROM live_sessions s
                    JOIN session_participants p ON p.session_id = s.id
                    FULL JOIN session_reservations r ON r.session_id = p.session_id AND r.learner_id = p.user_id
                    WHERE s.booking_request_id = ANY(:ids) ORDER BY 1
                    """
                ),
                {"ids": ids},
            )
        ).all()
        inbox: dict[str, int] = dict(
            (
                await conn.execute(
                    text("SELECT outcome, count(*) FROM inbox_messages WHERE topic = :t GROUP BY outcome"),
                    {"t": s.input_topic},
                )
            ).all()
        )
        outbox_rows = await conn.scalar(
            text("SELECT count(*) FROM outbox_messages WHERE key = ANY(:ids)"), {"ids": ids}
        )
    output = await read_topic(s.kafka_bootstrap, s.output_topic, expected=int(outbox_rows or 0), **kafka)
    dlq = await read_topic(s.kafka_bootstrap, s.dlq_topic, expected=1, **kafka)
    return Outcome(sessions, learners, inbox, output, dlq)


def print_tables(console: Console, seen: Outcome) -> None:
    """The sessions, learners, output messages, inbox outcomes and dead letters, as tables on ``console``."""
    t = Table(title="live_sessions")
    for col in ("booking", "session id", "status", "scheduled_start (UTC)", "min", "meeting_link"):
        t.add_column(col)
    for row in seen.sessions:
        t.add_row(
            row.booking_request_id,
            str(row.id),
            row.status if row.cancellation_reason is None else f"{row.status} ({row.cancellation_reason})",
            row.scheduled_start.astimezone(UTC).isoformat(),
            str(row.duration_minutes),
            row.meeting_link,
        )
    console.print(t)
    t = Table(title="session_participants + session_reservations")
    for col in ("booking", "user", "role", "reservation"):
        t.add_column(col)
    for row in seen.learners:
        t.add_row(row.booking_request_id, row.user_id, row.role, row.status)
    console.print(t)
    t = Table(title="messages read back from the output topic")
    for col in ("booking", "type", "message_id", "partition/offset"):
        t.add_column(col)
    for m in sorted(seen.output, key=lambda m: (m.key or b"", m.offset)):
        body = json.loads(m.value or b"{}")
        t.add_row((m.key or b"").decode(), body.get("type"), body.get("message_id"), f"{m.partition}/{m.offset}")
    console.print(t)
    console.print(
        f"inbox outcomes: {seen.inbox}; dead letters: "
        + ", ".join(
            f"{dict(m.headers).get('dlq-reason', b'').decode()} ({dict(m.headers).get('dlq-error', b'').decode()})"
            for m in seen.dlq
        )
    )


def inbox_check(inbox: dict[str, int], duplicates: int) -> Check:
    """Each message id applied once (CONTRACT, "What each event does"); ``duplicates``: repeats the service saw."""
    # 13 distinct message ids; the triple delivery repeats one twice and the redelivery one more time.
    ok = inbox == {"applied": 13} and duplicates == 3
    return Check("each message id applied once, repeats dropped", ok, f"{inbox}, {duplicates} repeats")


def checks(scenario: Scenario, seen: Outcome, meeting_base_url: str) -> list[Check]:
    """The scenario's rows and messages against the CONTRACT: "What each event does", "Rows", "Output", "Dead
    letters"; one ``Check`` per rule, in a fixed order."""
    bookings, sessions, learners, output, dlq = scenario.bookings, seen.sessions, seen.learners, seen.output, seen.dlq
    per_booking = Counter(row.booking_request_id for row in sessions)
    created: dict[str, set[str]] = {}
    told: dict[str, list[tuple[str, str, str | None]]] = {}  # per booking, in order: type, id, reason
    for m in sorted(output, key=lambda m: m.offset):  # one booking's messages share a partition
        body = json.loads(m.value or b"{}")
        told.setdefault(body["booking_id"], []).append(
            (body["type"], body["message_id"], body["session"].get("cancellation_reason"))
        )
        if body.get("type") == "SessionCreated":
            created.setdefault(body["booking_id"], set()).add(body["message_id"])
    announced = [b for n, b in bookings.items() if n != "overtaken"]
    expected_created = {b: {str(session_created_id(session_id(b)))} for b in announced}
    cancelled, overtaken = bookings["cancelled"], bookings["overtaken"]
    cancelled_sid = session_id(cancelled)
    statuses = {r.booking_request_id: r.status for r in sessions}
    reservations = {r.booking_request_id: r.status for r in learners if r.booking_request_id == overtaken}
    links = [row.meeting_link for row in sessions]
    guessable = [
        link
        for row, link in zip(sessions, links, strict=True)
        if row.booking_request_id in link or str(row.id) in link or row.id.hex in link
    ]
    confirmed = {bookings[n] for n in ("manual", "triple", "race", "other")}
    learner_count = Counter(
        row.booking_request_id for row in learners if row.role == "LEARNER" and row.status == "CONFIRMED"
    )
    other = next((r for r in sessions if r.booking_request_id == bookings["other"]), None)
    return [
        Check("one session per booking", per_booking == Counter(bookings.values()), f"{dict(per_booking)}"),
        Check(
            "status SCHEDULED, CANCELLED for the two cancelled bookings",
            statuses == {b: "CANCELLED" if b in (cancelled, overtaken) else "SCHEDULED" for b in bookings.values()},
            "",
        ),
        Check(
            "cancelled after it was announced: SessionCreated, then one SessionCancelled with the reason",
            told.get(cancelled)
            == [
                ("SessionCreated", str(session_created_id(cancelled_sid)), None),
                ("SessionCancelled", str(session_cancelled_id(cancelled_sid)), REASON),
            ],
            f"{[kind for kind, _, _ in told.get(cancelled, [])]}",
        ),
        Check(
            "cancellation overtook the approval: never announced, late approval did not open it",
            overtaken not in told
            and statuses.get(overtaken) == "CANCELLED"
            and reservations == {overtaken: "CANCELLED"},
            f"{len(told.get(overtaken, []))} message(s), reservation {reservations.get(overtaken)}",
        ),
        Check(
            "one SessionCreated id per booking, the contract's UUIDv5",
            created == expected_created,
            f"{sum(len(v) for v in created.values())} ids for {len(created)} bookings",
        ),
        Check(
            "meeting links distinct and unguessable",
            len(set(links)) == len(links) == len(bookings)
            and not guessable
            and all(link.startswith(meeting_base_url.rstrip("/") + "/") for link in links),
            f"{len(set(links))} distinct, {len(guessable)} guessable",
        ),
        Check(
            "one learner + CONFIRMED reservation per confirmed booking",
            learner_count == Counter(confirmed),
            f"{dict(learner_count)}",
        ),
        Check(
            "the newer snapshot won (reschedule applied)",
            other is not None and other.scheduled_start == scenario.base + timedelta(days=8),
            "",
        ),
        Check(
            "malformed record dead-lettered with reason invalid",
            [dict(m.headers).get(DLQ_REASON) for m in dlq] == [b"invalid"],
            f"{len(dlq)} dead letter(s)",
        ),
    ]
