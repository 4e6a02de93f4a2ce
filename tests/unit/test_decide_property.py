"""decide(): order- and duplicate-independence against an in-memory model of the database (the examples are in
test_decide_examples.py and test_decide_cancellation.py).

The model mirrors consumer/batch.py + consumer/store.py: decode, drop in-batch repeats (split_repeats), drop
message ids already in the inbox, group per booking, decide on the new events, then apply as the SQL does
(session upsert guarded by the version and the cancellation, the reservations of a session it cancels
cancelled, learners and outbox rows ON CONFLICT DO NOTHING, a reservation only ever CONFIRMED -> CANCELLED).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.decide import (
    Decision,
    OutboxRow,
    SessionDetails,
    SessionRow,
    cancellation_of,
    decide,
    earlier,
    version_of,
)
from consumer.decode import decode
from consumer.grouping import classify_repeats, group_events, split_repeats
from consumer.ids import session_cancelled_id, session_created_id, session_id, session_updated_id
from models.events import BookingEvent
from models.records import Record
from producer.bookings import encode
from tests.unit.builders import MAX_BYTES, event
from tests.unit.decisions import NOW, link_for

# --- the in-memory database ---------------------------------------------------------------------------------


@dataclass
class Db:
    inbox: dict[UUID, str] = field(default_factory=dict)  # message_id -> payload_sha256
    sessions: dict[str, SessionRow] = field(default_factory=dict)  # booking_request_id UNIQUE
    learners: set[tuple[UUID, str]] = field(default_factory=set)  # (session_id, user_id) UNIQUE
    reservations: dict[tuple[UUID, str], str] = field(default_factory=dict)  # (session_id, learner_id) -> status
    outbox: dict[UUID, tuple[int, OutboxRow]] = field(default_factory=dict)  # message_id UNIQUE -> (batch, row)

    def process(self, records: Sequence[Record], batch: int) -> None:
        decoded = [decode(r, MAX_BYTES) for r in records]
        assert all(d.outcome == "applied" for d in decoded)
        firsts, in_batch = split_repeats(decoded)
        keyed = [d for d in firsts if d.message_id is not None]
        new_ids = {d.message_id for d in keyed if d.message_id not in self.inbox}
        earlier = [d for d in keyed if d.message_id not in new_ids]
        across = classify_repeats(earlier, {d.message_id: self.inbox[d.message_id] for d in earlier if d.message_id})
        assert in_batch.conflicts == [] and across.conflicts == []  # copies are byte-identical
        for d in keyed:
            if d.message_id is not None and d.message_id in new_ids:
                self.inbox[d.message_id] = d.payload_sha256
        fresh = [d for d in firsts if d.message_id in new_ids]
        for booking_id, events in group_events(fresh).items():
            self.apply(decide(self.sessions.get(booking_id), events, link_for, NOW), batch)

    def apply(self, decision: Decision, batch: int) -> None:
        row = decision.session
        if row is not None:
            current = self.sessions.get(row.booking_id)
            assert decision.first_write == (current is None)  # else write_decisions raises StaleDecision
            if current is None:
                self.sessions[row.booking_id] = row
            else:
                # DO UPDATE: each column pair under its own guard, never the id or the meeting link.
                if current.version < row.version:
                    current = current._replace(details=row.details, version=row.version)
                current = current._replace(cancellation=earlier(current.cancellation, row.cancellation))
                self.sessions[row.booking_id] = current
            if self.sessions[row.booking_id].cancellation is not None:  # cancelled_reservations in the upsert
                for pair in self.reservations:
                    if pair[0] == row.id:
                        self.reservations[pair] = "CANCELLED"
        if decision.learners:
            # session_participants / session_reservations point at the session row.
            assert decision.session_id in {s.id for s in self.sessions.values()}
        self.learners |= {(decision.session_id, student) for student in decision.learners}
        for student in decision.learners:
            pair = (decision.session_id, student)
            if decision.cancelled or pair not in self.reservations:
                self.reservations[pair] = "CANCELLED" if decision.cancelled else "CONFIRMED"
        for o in decision.outbox:
            self.outbox.setdefault(o.message_id, (batch, o))

    def outbox_of(self, booking_id: str) -> list[tuple[int, OutboxRow]]:
        return [(b, o) for b, o in self.outbox.values() if o.key == booking_id]


def as_record(e: BookingEvent, offset: int) -> Record:
    return Record("booking.events", 0, offset, e.booking_id.encode(), encode(e))


# --- strategies ---------------------------------------------------------------------------------------------

OFFSETS = [
    UTC,
    timezone(timedelta(hours=1)),
    timezone(timedelta(hours=-5, minutes=-30)),
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-12)),
]
# Few instants, so that ties on occurred_at (also written in different offsets) are common.
OCCURRED = [datetime(2026, 11, 24, 10, tzinfo=UTC) + timedelta(minutes=m) for m in (0, 1, 30)]
STARTS = [datetime(2026, 12, 1, 15, tzinfo=UTC), datetime(2026, 12, 2, 9, 30, tzinfo=UTC)]
BOOKINGS = ["bk_1", "bk_2"]


def in_some_offset(instants: list[datetime]) -> st.SearchStrategy[datetime]:
    return st.builds(lambda i, tz: i.astimezone(tz), st.sampled_from(instants), st.sampled_from(OFFSETS))


@st.composite
def booking_events(draw: st.DrawFn) -> list[BookingEvent]:
    """Events of one or two bookings with distinct message ids and varied snapshots."""
    bookings = BOOKINGS[: draw(st.integers(1, 2))]
    count = draw(st.integers(len(bookings), 6))
    ids = draw(st.lists(st.uuids(), min_size=count, max_size=count, unique=True))
    events = []
    for i, mid in enumerate(ids):
        events.append(
            event(
                mid,
                draw(in_some_offset(OCCURRED)),
                type=draw(
                    st.sampled_from(["BookingApproved", "BookingConfirmed", "BookingConfirmed", "BookingCancelled"])
                ),
                booking_id=bookings[i % len(bookings)],
                student_id=draw(st.sampled_from(["u_1", "u_2"])),
                instructor_id=draw(st.sampled_from(["i_1", "i_2"])),
                scheduled_start=draw(in_some_offset(STARTS)),
                duration_minutes=draw(st.sampled_from([30, 60])),
                title=draw(st.sampled_from([None, "Algebra", "Geometry"])),
                cancellation_reason=draw(st.sampled_from([None, "ill", "moved"])),
            )
        )
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[BookingEvent]) -> tuple[list[list[Record]], list[bool]]:
    """Any duplication, any permutation, any split into batches; and whether the inbox is pruned before each."""
    copies = [e for e in events for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(copies))
    batches: list[list[Record]] = [[]]
    for offset, e in enumerate(order):
        cut: bool = draw(st.booleans())
        if cut and batches[-1]:
            batches.append([])
        batches[-1].append(as_record(e, offset))
    prune = draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    return batches, prune


def run(batches: Sequence[Sequence[Record]], prune: Sequence[bool] = (), db: Db | None = None) -> Db:
    db = db or Db()
    for number, batch in enumerate(batches):
        if number < len(prune) and prune[number]:
            db.inbox.clear()
        db.process(batch, number)
    return db


def clean(events: list[BookingEvent]) -> Db:
    """Each event once, in occurred_at order (ties: message_id), one per batch."""
    ordered = sorted(events, key=version_of)
    return run([[as_record(e, i)] for i, e in enumerate(ordered)])


# --- the property -------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_permutation_duplication_and_batching_leaves_the_rows_of_the_clean_sequence(data: st.DataObject) -> None:
    events = data.draw(booking_events(), label="events")
    batches, prune = data.draw(deliveries(events), label="delivery")

    db = run(batches)
    reference = clean(events)

    assert db.sessions == reference.sessions
    assert db.learners == reference.learners
    assert db.reservations == reference.reservations
    for booking_id in {e.booking_id for e in events}:
        mine = [e for e in events if e.booking_id == booking_id]
        check_booking(db, booking_id, mine, batches)
        check_booking(reference, booking_id, mine, [[as_record(e, 0)] for e in sorted(events, key=version_of)])

    # A redelivery of everything, also after the inbox was pruned, changes nothing and tells nobody.
    before = (dict(db.sessions), set(db.learners), dict(db.reservations), list(db.outbox))
    run(batches, prune, db)
    run([[r for batch in batches for r in batch]], [True], db)
    assert (db.sessions, db.learners, db.reservations, list(db.outbox)) == before


def check_booking(db: Db, booking_id: str, events: list[BookingEvent], batches: list[list[Record]]) -> None:
    sid = session_id(booking_id)
    newest = max(events, key=lambda e: (e.occurred_at, e.message_id))
    start = newest.booking.scheduled_start

    row = db.sessions[booking_id]
    assert row.id == sid
    assert row.meeting_link == link_for(sid)
    assert row.version == (newest.occurred_at, newest.message_id)
    assert row.details == SessionDetails(
        instructor_id=newest.booking.instructor_id,
        student_id=newest.booking.student_id,
        title=newest.booking.title,
        scheduled_start=start,
        duration_minutes=newest.booking.duration_minutes,
    )
    cancellation = cancellation_of(events)
    assert row.cancellation == cancellation
    assert row.status == ("SCHEDULED" if cancellation is None else "CANCELLED")
    confirmed = {(sid, e.booking.student_id) for e in events if e.type == "BookingConfirmed"}
    assert {pair for pair in db.learners if pair[0] == sid} == confirmed
    status = "CONFIRMED" if cancellation is None else "CANCELLED"
    assert {pair: s for pair, s in db.reservations.items() if pair[0] == sid} == dict.fromkeys(confirmed, status)

    outbox = db.outbox_of(booking_id)
    first_batch = min(i for i, batch in enumerate(batches) for r in batch if r.key == booking_id.encode())
    first_types = {json.loads(r.value or b"")["type"] for r in batches[first_batch] if r.key == booking_id.encode()}
    if "BookingCancelled" in first_types:  # cancelled before anybody was told: never announced
        assert outbox == []
        return
    kinds = [o.event.type for _, o in outbox]
    assert kinds[0] == "SessionCreated" and kinds.count("SessionCreated") == 1
    assert outbox[0][:2] == (first_batch, outbox[0][1]) and outbox[0][1].message_id == session_created_id(sid)
    assert kinds.count("SessionCancelled") == (cancellation is not None)
    if cancellation is not None:  # announced once, last: nothing after a cancellation
        assert kinds[-1] == "SessionCancelled"
        assert outbox[-1][1].message_id == session_cancelled_id(sid)
        assert outbox[-1][1].event.session.status == "CANCELLED"
    assert set(kinds[1 : len(kinds) - (cancellation is not None)]) <= {"SessionUpdated"}
    causes = {session_updated_id(sid, e.message_id) for e in events}
    for _, o in outbox:
        assert o.event.type != "SessionUpdated" or o.message_id in causes
        assert (o.key, o.event.booking_id, o.event.session.id) == (booking_id, booking_id, sid)
        assert o.event.session.meeting_link == row.meeting_link
        assert o.event.session.status == ("CANCELLED" if o.event.type == "SessionCancelled" else "SCHEDULED")
    if cancellation is not None:
        return  # details may change after the cancellation, and nobody is told
    # The video service ends with what the row says: the last event carries the final details.
    last = outbox[-1][1].event.session
    assert (last.instructor_id, last.student_id, last.title, last.duration_minutes) == (
        row.details.instructor_id,
        row.details.student_id,
        row.details.title,
        row.details.duration_minutes,
    )
    assert last.scheduled_start == start
