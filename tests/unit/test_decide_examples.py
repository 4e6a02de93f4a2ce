"""decide() example by example: what the first event creates, who is a learner, which snapshot wins (newest, ties
to the larger message id) and when a SessionUpdated is sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from consumer.decide import SessionRow, decide, details_of
from consumer.ids import session_created_id, session_updated_id
from tests.unit.builders import event
from tests.unit.decisions import ID_A, ID_B, ID_C, NOW, SID, T0, created_row, link_for

# --- examples -----------------------------------------------------------------------------------------------


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
