"""decide(): order- and duplicate-independence against an in-memory model of the database, plus examples.

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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.decide import (
    Cancellation,
    Decision,
    OutboxRow,
    SessionDetails,
    SessionRow,
    cancellation_of,
    decide,
    details_of,
    earlier,
    version_of,
)
from consumer.decode import decode
from consumer.grouping import classify_repeats, group_events, split_repeats
from consumer.ids import meeting_link, session_cancelled_id, session_created_id, session_id, session_updated_id
from models.events import BookingEvent
from models.records import Record
from producer.bookings import encode
from tests.unit.builders import MAX_BYTES, event

SECRET = b"unit-test-secret"
BASE_URL = "https://meet.jit.si"
NOW = datetime(2026, 11, 24, 12, 0, 0, 123000, tzinfo=UTC)


def link_for(sid: UUID) -> str:
    return meeting_link(BASE_URL, sid, SECRET)


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


# --- examples -----------------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ID_A = UUID("00000000-0000-4000-8000-00000000000a")
ID_B = UUID("00000000-0000-4000-8000-00000000000b")
ID_C = UUID("00000000-0000-4000-8000-00000000000c")
SID = session_id("bk_123")


def created_row(e: BookingEvent) -> SessionRow:
    decision = decide(None, [e], link_for, NOW)
    assert decision.session is not None
    return decision.session


def test_the_first_event_creates_the_session_and_one_session_created() -> None:
    calls: list[UUID] = []

    def link(sid: UUID) -> str:
        calls.append(sid)
        return f"https://meet.example/{sid.hex[:4]}"

    e = event(ID_A, T0, type="BookingApproved")
    decision = decide(None, [e], link, NOW)

    assert calls == [SID]
    assert decision.session_id == SID
    assert decision.session == SessionRow(
        SID, "bk_123", details_of(e), f"https://meet.example/{SID.hex[:4]}", (T0, ID_A)
    )
    assert decision.learners == frozenset()
    [out] = decision.outbox
    assert (out.message_id, out.key, out.event.type) == (session_created_id(SID), "bk_123", "SessionCreated")
    assert out.event.message_id == session_created_id(SID)
    assert out.event.occurred_at == NOW


def test_booking_approved_alone_adds_no_learner_and_confirmed_adds_its_student() -> None:
    assert decide(None, [event(ID_A, T0, type="BookingApproved")], link_for, NOW).learners == frozenset()

    confirmed = decide(None, [event(ID_A, T0, type="BookingConfirmed", student_id="u_9")], link_for, NOW)
    assert confirmed.learners == frozenset({"u_9"})


def test_every_confirmed_student_of_the_batch_is_a_learner_even_from_an_older_snapshot() -> None:
    events = [
        event(ID_A, T0, type="BookingConfirmed", student_id="u_1"),
        event(ID_B, T0 + timedelta(minutes=1), type="BookingApproved", student_id="u_2"),
    ]
    assert decide(None, events, link_for, NOW).learners == frozenset({"u_1"})


def test_a_stale_event_after_a_newer_one_changes_nothing_and_tells_nobody() -> None:
    current = created_row(event(ID_A, T0 + timedelta(minutes=5), title="New"))
    stale = event(ID_B, T0, title="Old", type="BookingConfirmed", student_id="u_8")

    decision = decide(current, [stale], link_for, NOW)

    assert decision.session is None
    assert decision.outbox == ()
    assert decision.session_id == SID
    assert decision.learners == frozenset({"u_8"})  # participants only ever grow


def test_the_same_event_again_after_the_inbox_was_pruned_changes_nothing() -> None:
    e = event(ID_A, T0)
    decision = decide(created_row(e), [e], link_for, NOW)

    assert (decision.session, decision.outbox) == (None, ())


def test_a_newer_snapshot_with_changed_details_emits_one_session_updated() -> None:
    current = created_row(event(ID_A, T0, title="Algebra II"))
    newer = event(ID_B, T0 + timedelta(minutes=1), title="Geometry", duration_minutes=90)

    decision = decide(current, [newer], link_for, NOW)

    assert decision.session == current._replace(details=details_of(newer), version=(newer.occurred_at, ID_B))
    [out] = decision.outbox
    assert out.message_id == session_updated_id(SID, ID_B)
    assert out.message_id == UUID(str(session_updated_id(SID, ID_B)))
    assert (out.event.type, out.event.message_id, out.key) == ("SessionUpdated", out.message_id, "bk_123")
    assert (out.event.session.title, out.event.session.duration_minutes) == ("Geometry", 90)
    assert out.event.session.meeting_link == current.meeting_link


def test_the_meeting_link_of_the_existing_row_is_kept() -> None:
    current = created_row(event(ID_A, T0))._replace(meeting_link="https://meet.jit.si/existing-room")
    decision = decide(current, [event(ID_B, T0 + timedelta(minutes=1), title="Other")], link_for, NOW)

    assert decision.session is not None
    assert decision.session.meeting_link == "https://meet.jit.si/existing-room"
    assert decision.outbox[0].event.session.meeting_link == "https://meet.jit.si/existing-room"


def test_a_newer_snapshot_with_the_same_instant_in_another_offset_moves_the_version_silently() -> None:
    current = created_row(event(ID_A, T0, scheduled_start=datetime(2026, 12, 1, 15, tzinfo=UTC)))
    plus_one = datetime(2026, 12, 1, 16, tzinfo=timezone(timedelta(hours=1)))
    newer = event(ID_B, T0 + timedelta(seconds=1), scheduled_start=plus_one)

    decision = decide(current, [newer], link_for, NOW)

    assert decision.session == current._replace(version=(newer.occurred_at, ID_B))
    assert decision.outbox == ()


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_tie_on_occurred_at_in_one_batch_goes_to_the_larger_message_id(order: tuple[int, int]) -> None:
    # The same instant, written in two offsets.
    pair = [
        event(ID_C, T0, title="from C"),
        event(ID_B, T0.astimezone(timezone(timedelta(hours=-3))), title="from B"),
    ]
    decision = decide(None, [pair[i] for i in order], link_for, NOW)

    assert decision.session is not None
    assert (decision.session.details.title, decision.session.version[1]) == ("from C", ID_C)


def test_a_tie_on_occurred_at_across_batches_goes_to_the_larger_message_id() -> None:
    current = created_row(event(ID_B, T0, title="from B"))

    smaller = decide(current, [event(ID_A, T0, title="from A")], link_for, NOW)
    larger = decide(current, [event(ID_C, T0.astimezone(timezone(timedelta(hours=5))), title="from C")], link_for, NOW)

    assert (smaller.session, smaller.outbox) == (None, ())
    assert larger.session is not None
    assert larger.session.details.title == "from C"
    assert [o.message_id for o in larger.outbox] == [session_updated_id(SID, ID_C)]


def test_the_newest_of_a_batch_wins_whatever_its_position() -> None:
    events = [event(ID_A, T0 + timedelta(minutes=9), title="newest"), event(ID_C, T0, title="oldest")]

    first = decide(None, events, link_for, NOW)
    second = decide(None, events[::-1], link_for, NOW)

    assert first == second
    assert first.session is not None
    assert first.session.details.title == "newest"


def test_several_new_events_on_an_existing_session_emit_at_most_one_update() -> None:
    current = created_row(event(ID_A, T0, title="t0"))
    events = [event(ID_B, T0 + timedelta(minutes=1), title="t1"), event(ID_C, T0 + timedelta(minutes=2), title="t2")]

    decision = decide(current, events, link_for, NOW)

    assert [o.message_id for o in decision.outbox] == [session_updated_id(SID, ID_C)]
    assert decision.outbox[0].event.session.title == "t2"


def test_decide_on_no_events_raises() -> None:
    with pytest.raises(ValueError):
        decide(None, [], link_for, NOW)


# --- cancellation examples ----------------------------------------------------------------------------------


def cancelled(message_id: UUID, occurred_at: datetime, reason: str | None = "ill", **fields: object) -> BookingEvent:
    return event(message_id, occurred_at, type="BookingCancelled", cancellation_reason=reason, **fields)  # type: ignore[arg-type]


def test_a_cancellation_before_any_approval_creates_the_row_cancelled_and_tells_nobody() -> None:
    decision = decide(None, [cancelled(ID_A, T0)], link_for, NOW)

    assert decision.session is not None
    assert (decision.session.status, decision.session.cancellation) == ("CANCELLED", Cancellation(T0, ID_A, "ill"))
    assert (decision.outbox, decision.cancelled, decision.first_write) == ((), True, True)


def test_a_late_approval_and_confirmation_cannot_open_a_cancelled_session() -> None:
    current = created_row(cancelled(ID_B, T0 + timedelta(minutes=5)))
    late = [event(ID_A, T0, type="BookingApproved"), event(ID_C, T0 + timedelta(minutes=1), student_id="u_9")]

    decision = decide(current, late, link_for, NOW)

    assert (decision.session, decision.outbox) == (None, ())
    assert (decision.learners, decision.cancelled) == (frozenset({"u_9"}), True)  # a CANCELLED reservation


def test_cancelling_an_announced_session_sends_one_session_cancelled_with_the_reason() -> None:
    current = created_row(event(ID_A, T0, type="BookingApproved"))

    decision = decide(current, [cancelled(ID_B, T0 + timedelta(minutes=1), reason="moved away")], link_for, NOW)

    assert decision.session == current._replace(
        version=(T0 + timedelta(minutes=1), ID_B),
        cancellation=Cancellation(T0 + timedelta(minutes=1), ID_B, "moved away"),
    )
    [out] = decision.outbox
    assert (out.message_id, out.event.type) == (session_cancelled_id(SID), "SessionCancelled")
    assert (out.event.session.status, out.event.session.cancellation_reason) == ("CANCELLED", "moved away")
    assert json.loads(out.payload())["session"]["cancellation_reason"] == "moved away"
    assert out.payload() == out.event.model_dump_json()


def test_a_session_cancelled_without_a_reason_leaves_the_field_out() -> None:
    current = created_row(event(ID_A, T0))

    [out] = decide(current, [cancelled(ID_B, T0 - timedelta(minutes=1), reason=None)], link_for, NOW).outbox

    assert "cancellation_reason" not in json.loads(out.payload())["session"]
    assert out.event.session.status == "CANCELLED"
    assert out.event.session.title == "Algebra II"  # the older cancellation's snapshot does not overwrite


def test_a_newer_snapshot_after_the_cancellation_moves_the_row_silently() -> None:
    current = created_row(cancelled(ID_A, T0))
    newer = event(ID_B, T0 + timedelta(minutes=1), title="Geometry", type="BookingApproved")

    decision = decide(current, [newer], link_for, NOW)

    assert decision.session == current._replace(details=details_of(newer), version=(newer.occurred_at, ID_B))
    assert decision.outbox == ()


def test_an_earlier_cancellation_arriving_later_takes_over_the_row_silently() -> None:
    current = created_row(cancelled(ID_B, T0 + timedelta(minutes=5), reason="second thoughts"))

    decision = decide(current, [cancelled(ID_C, T0, reason="first")], link_for, NOW)

    assert decision.session is not None
    assert decision.session.cancellation == Cancellation(T0, ID_C, "first")
    assert decision.session.version == current.version  # the details stay those of the newest snapshot
    assert decision.outbox == ()
    repeat = decide(decision.session, [cancelled(ID_A, T0 + timedelta(minutes=1))], link_for, NOW)
    assert (repeat.session, repeat.outbox) == (None, ())  # neither newer nor earlier: nothing to write


def test_approval_and_cancellation_in_one_batch_of_a_new_session_tell_nobody() -> None:
    events = [event(ID_A, T0, type="BookingApproved"), cancelled(ID_B, T0 + timedelta(minutes=1))]

    decision = decide(None, events, link_for, NOW)

    assert decision.session is not None and decision.session.status == "CANCELLED"
    assert decision.outbox == ()
