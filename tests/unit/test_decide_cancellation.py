"""decide() on cancellations, example by example (CONTRACT, cancellation): the earliest cancellation wins and is
final, SessionCancelled only for a session that was announced, and nothing reopens a cancelled session."""

from __future__ import annotations

import json
from datetime import timedelta

from consumer.decide import Cancellation, decide, details_of
from consumer.ids import session_cancelled_id
from tests.unit.builders import event
from tests.unit.decisions import ID_A, ID_B, ID_C, NOW, SID, T0, cancelled, created_row, link_for

# --- cancellation examples ----------------------------------------------------------------------------------


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
