"""``booking-sessions demo``: the seed's scenarios, live, through the real consumer, database and relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import ConsumerRecord
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.dev.servers import with_throwaway_secret
from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.service import create_engine, open_service, run_until
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics, read_topic
from consumer.batch import BatchResult
from consumer.ids import session_cancelled_id, session_created_id, session_id
from models.events import BookingEvent
from models.records import OutgoingRecord
from producer.bookings import as_record, booking_event
from producer.publish import Publisher

DRAIN_TIMEOUT_S = 40.0
Steps = list[tuple[str, list[OutgoingRecord]]]
KINDS = {"approved": "BookingApproved", "confirmed": "BookingConfirmed", "cancelled": "BookingCancelled"}
REASON = "the student moved away"


@dataclass
class Progress:
    """Offsets produced and committed, so the demo can wait for 'drained' without guessing."""

    produced: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    duplicates: int = 0

    async def on_committed(self, result: BatchResult) -> None:
        for tp, offset in result.next_offsets.items():
            self.committed[tp] = max(self.committed.get(tp, 0), offset)
        self.duplicates += result.duplicates
        self.changed.set()

    def drained(self) -> bool:
        return all(self.committed.get(tp, 0) >= end for tp, end in self.produced.items())


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class Demo:
    def __init__(self, settings: Settings, console: Console) -> None:
        tag = secrets.token_hex(3)
        # Own topics, group and booking ids: the demo never touches live data, even on a configured broker.
        self.settings = settings.model_copy(
            update={
                "input_topic": f"demo-{tag}.booking.events",
                "output_topic": f"demo-{tag}.session.events",
                "dlq_topic": f"demo-{tag}.booking.events.dlq",
                "group_id": f"demo-{tag}",
            }
        )
        # The demo's own bookings may use a throwaway key even on configured servers.
        self.settings = with_throwaway_secret(self.settings)
        self.console = console
        self.kafka = kafka_client_options(self.settings)  # TLS/SASL, as for the service's own clients
        names = ("auto", "manual", "triple", "race", "other", "cancelled", "overtaken")
        self.bookings = {name: f"demo-{tag}-{name}" for name in names}
        self.progress = Progress()
        self.base = datetime.now(UTC).replace(microsecond=0)

    def event(self, kind: str, name: str, minutes: int, *, start_days: int = 7, **extra: object) -> BookingEvent:
        return booking_event(
            KINDS[kind],  # type: ignore[arg-type]
            self.bookings[name],
            student_id=f"student-{name}",
            instructor_id="instructor-ada",
            scheduled_start=self.base + timedelta(days=start_days),
            duration_minutes=60,
            title=f"Algebra II ({name})",
            occurred_at=self.base + timedelta(minutes=minutes),
            **extra,  # type: ignore[arg-type]
        )

    async def send(self, publisher: Publisher, records: list[OutgoingRecord]) -> None:
        for metadata in await publisher.send_all(records):
            tp = (metadata.topic, metadata.partition)
            self.progress.produced[tp] = max(self.progress.produced.get(tp, 0), metadata.offset + 1)

    async def wait_consumed(self) -> None:
        """Until the service committed offsets past every record the demo produced."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not self.progress.drained():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not consumed: produced {self.progress.produced}, committed {self.progress.committed}"
                )
            self.progress.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.changed.wait(), timeout=1.0)

    async def run(self) -> bool:
        s = self.settings
        assert s.kafka_bootstrap is not None
        started = time.monotonic()
        await ensure_topics(s.kafka_bootstrap, [s.input_topic, s.output_topic, s.dlq_topic], 12, **self.kafka)
        topic = s.input_topic
        approved_manual = self.event("approved", "manual", 0)
        confirmed_triple = self.event("confirmed", "triple", 1)
        phase_one: Steps = [
            ("an auto-approved booking", [as_record(self.event("approved", "auto", 0, auto_approved=True), topic)]),
            ("a manual approval ...", [as_record(approved_manual, topic)]),
            ("... an event for a second booking, interleaved", [as_record(self.event("approved", "other", 0), topic)]),
            ("... then the confirmation", [as_record(self.event("confirmed", "manual", 2), topic)]),
            ("the same confirmation delivered three times", [as_record(confirmed_triple, topic)] * 3),
            (
                "a malformed record (goes to the DLQ)",
                [OutgoingRecord(topic, self.bookings["other"].encode(), b"{oops")],
            ),
            ("a booking approved (to be cancelled later)", [as_record(self.event("approved", "cancelled", 0), topic)]),
            (
                "a cancellation that overtakes its booking's approval",
                [as_record(self.event("cancelled", "overtaken", 4), topic)],
            ),
        ]
        publishers = [
            await Publisher.start(s.kafka_bootstrap, client_id=f"demo-upstream-{i}", **self.kafka) for i in (1, 2)
        ]
        try:
            async with open_service(s, on_committed=self.progress.on_committed) as service:
                stop = asyncio.Event()
                runner = asyncio.create_task(run_until(service, stop))
                self.console.print("[bold]step 1[/]: upstream publishes while the service runs")
                await self.publish_step(publishers, phase_one, race=True)
                self.console.print("[bold]step 2[/]: later, a redelivery and a reschedule")
                await self.publish_step(publishers, self.later(approved_manual), race=False)
                stop.set()
                await runner  # finishes the batch in hand, commits, flushes the relay
        finally:
            for publisher in publishers:
                await publisher.stop()
        engine = create_engine(s)
        try:
            checks = await self.report(engine)
        finally:
            await engine.dispose()
        elapsed = time.monotonic() - started
        table = Table(title=f"Checks ({elapsed:.1f} s)", show_lines=False)
        table.add_column("")
        table.add_column("check")
        table.add_column("detail")
        for check in checks:
            table.add_row("[green]PASS[/]" if check.ok else "[red]FAIL[/]", check.name, check.detail)
        self.console.print(table)
        return all(c.ok for c in checks)

    def later(self, approved_manual: BookingEvent) -> Steps:
        topic = self.settings.input_topic
        reschedule = self.event("confirmed", "other", 5, start_days=8)
        late = [self.event("approved", "overtaken", 0), self.event("confirmed", "overtaken", 1)]
        return [
            ("a redelivered message id (the manual approval, again)", [as_record(approved_manual, topic)]),
            ("a reschedule of the second booking (a newer snapshot)", [as_record(reschedule, topic)]),
            (
                "the cancellation of the approved booking",
                [as_record(self.event("cancelled", "cancelled", 6, cancellation_reason=REASON), topic)],
            ),
            ("the overtaken booking's late approval and confirmation", [as_record(e, topic) for e in late]),
        ]

    async def publish_step(self, publishers: list[Publisher], steps: Steps, *, race: bool) -> None:
        """Publish while the service runs, then wait until it committed past everything published."""
        topic = self.settings.input_topic
        for title, records in steps:
            self.console.print(f"  [cyan]publish[/] {title}: {len(records)} record(s)")
            await self.send(publishers[0], records)
        if race:
            self.console.print("  [cyan]publish[/] two confirmations of one booking, raced from two producers")
            events = [self.event("confirmed", "race", 3), self.event("confirmed", "race", 3)]
            await asyncio.gather(
                *(self.send(p, [as_record(e, topic)]) for p, e in zip(publishers, events, strict=True))
            )
        await self.wait_consumed()

    async def report(self, engine: AsyncEngine) -> list[Check]:
        s = self.settings
        assert s.kafka_bootstrap is not None
        ids = list(self.bookings.values())
        async with engine.connect() as conn:
            sessions = (
                await conn.execute(
                    text(
                        "SELECT * FROM live_sessions WHERE booking_request_id = ANY(:ids) ORDER BY booking_request_id"
                    ),
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
        output = await read_topic(s.kafka_bootstrap, s.output_topic, expected=int(outbox_rows or 0), **self.kafka)
        dlq = await read_topic(s.kafka_bootstrap, s.dlq_topic, expected=1, **self.kafka)
        self.print_tables(sessions, learners, output, inbox, dlq)
        return [*self.checks(sessions, learners, output, dlq), self.inbox_check(inbox)]

    def inbox_check(self, inbox: dict[str, int]) -> Check:
        # 13 distinct message ids; the triple delivery repeats one twice and the redelivery one more time.
        ok = inbox == {"applied": 13} and self.progress.duplicates == 3
        return Check(
            "each message id applied once, repeats dropped", ok, f"{inbox}, {self.progress.duplicates} repeats"
        )

    def print_tables(
        self,
        sessions: Sequence[Any],
        learners: Sequence[Any],
        output: list[ConsumerRecord[bytes, bytes]],
        inbox: dict[str, int],
        dlq: list[ConsumerRecord[bytes, bytes]],
    ) -> None:
        t = Table(title="live_sessions")
        for col in ("booking", "session id", "status", "scheduled_start (UTC)", "min", "meeting_link"):
            t.add_column(col)
        for row in sessions:
            t.add_row(
                row.booking_request_id,
                str(row.id),
                row.status if row.cancellation_reason is None else f"{row.status} ({row.cancellation_reason})",
                row.scheduled_start.astimezone(UTC).isoformat(),
                str(row.duration_minutes),
                row.meeting_link,
            )
        self.console.print(t)
        t = Table(title="session_participants + session_reservations")
        for col in ("booking", "user", "role", "reservation"):
            t.add_column(col)
        for row in learners:
            t.add_row(row.booking_request_id, row.user_id, row.role, row.status)
        self.console.print(t)
        t = Table(title="messages read back from the output topic")
        for col in ("booking", "type", "message_id", "partition/offset"):
            t.add_column(col)
        for m in sorted(output, key=lambda m: (m.key or b"", m.offset)):
            body = json.loads(m.value or b"{}")
            t.add_row((m.key or b"").decode(), body.get("type"), body.get("message_id"), f"{m.partition}/{m.offset}")
        self.console.print(t)
        self.console.print(
            f"inbox outcomes: {inbox}; dead letters: "
            + ", ".join(
                f"{dict(m.headers).get('dlq-reason', b'').decode()} ({dict(m.headers).get('dlq-error', b'').decode()})"
                for m in dlq
            )
        )

    def checks(
        self,
        sessions: Sequence[Any],
        learners: Sequence[Any],
        output: list[ConsumerRecord[bytes, bytes]],
        dlq: list[ConsumerRecord[bytes, bytes]],
    ) -> list[Check]:
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
        announced = [b for n, b in self.bookings.items() if n != "overtaken"]
        expected_created = {b: {str(session_created_id(session_id(b)))} for b in announced}
        cancelled, overtaken = self.bookings["cancelled"], self.bookings["overtaken"]
        cancelled_sid = session_id(cancelled)
        statuses = {r.booking_request_id: r.status for r in sessions}
        reservations = {r.booking_request_id: r.status for r in learners if r.booking_request_id == overtaken}
        links = [row.meeting_link for row in sessions]
        guessable = [
            link
            for row, link in zip(sessions, links, strict=True)
            if row.booking_request_id in link or str(row.id) in link or row.id.hex in link
        ]
        confirmed = {self.bookings[n] for n in ("manual", "triple", "race", "other")}
        learner_count = Counter(
            row.booking_request_id for row in learners if row.role == "LEARNER" and row.status == "CONFIRMED"
        )
        other = next((r for r in sessions if r.booking_request_id == self.bookings["other"]), None)
        return [
            Check("one session per booking", per_booking == Counter(self.bookings.values()), f"{dict(per_booking)}"),
            Check(
                "status SCHEDULED, CANCELLED for the two cancelled bookings",
                statuses
                == {b: "CANCELLED" if b in (cancelled, overtaken) else "SCHEDULED" for b in self.bookings.values()},
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
                len(set(links)) == len(links) == len(self.bookings)
                and not guessable
                and all(link.startswith(self.settings.meeting_base_url.rstrip("/") + "/") for link in links),
                f"{len(set(links))} distinct, {len(guessable)} guessable",
            ),
            Check(
                "one learner + CONFIRMED reservation per confirmed booking",
                learner_count == Counter(confirmed),
                f"{dict(learner_count)}",
            ),
            Check(
                "the newer snapshot won (reschedule applied)",
                other is not None and other.scheduled_start == self.base + timedelta(days=8),
                "",
            ),
            Check(
                "malformed record dead-lettered with reason invalid",
                [dict(m.headers).get("dlq-reason") for m in dlq] == [b"invalid"],
                f"{len(dlq)} dead letter(s)",
            ),
        ]


async def run_demo(settings: Settings, console: Console) -> bool:
    return await Demo(settings, console).run()
