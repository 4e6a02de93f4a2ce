"""The contract's cancellation fields: BookingCancelled in (optional cancellation_reason, at most 200 characters),
SessionCancelled out (status CANCELLED, cancellation_reason only when given)."""

from __future__ import annotations

import json

import pytest

from consumer.decode import decode
from tests.unit.builders import DROP, MAX_BYTES, body, record


def test_a_booking_cancelled_with_a_reason_is_applied() -> None:
    decoded = decode(record(body({"type": "BookingCancelled", "cancellation_reason": "ill"})), MAX_BYTES)

    assert (decoded.outcome, decoded.event_type) == ("applied", "BookingCancelled")
    assert decoded.event is not None and decoded.event.cancellation_reason == "ill"


def test_the_reason_is_optional_and_ignored_on_other_types() -> None:
    cancelled = decode(record(body({"type": "BookingCancelled"})), MAX_BYTES)
    approved = decode(record(body({"type": "BookingApproved", "cancellation_reason": "x"})), MAX_BYTES)

    assert cancelled.event is not None and cancelled.event.cancellation_reason is None
    assert approved.outcome == "applied"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        pytest.param({"cancellation_reason": "x" * 201}, "cancellation_reason", id="reason-too-long"),
        pytest.param({"cancellation_reason": 7}, "cancellation_reason", id="reason-not-text"),
        pytest.param({"booking": DROP}, "booking", id="no-snapshot"),
    ],
)
def test_an_invalid_cancellation_is_dead_lettered(changes: dict[str, object], where: str) -> None:
    decoded = decode(record(body({"type": "BookingCancelled", **changes})), MAX_BYTES)

    assert (decoded.outcome, decoded.reason) == ("dead_lettered", "invalid")
    assert decoded.error is not None and decoded.error.startswith(where)


def test_a_reason_of_200_characters_is_kept_whole() -> None:
    decoded = decode(record(body({"type": "BookingCancelled", "cancellation_reason": "é" * 200})), MAX_BYTES)

    assert decoded.event is not None and decoded.event.cancellation_reason == "é" * 200
    assert json.loads(decoded.record.value or b"")["cancellation_reason"] == "é" * 200
