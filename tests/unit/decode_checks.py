"""What the decode() tests check on every outcome (check_invariants, assert_invalid), the example's message id,
and the ``no_parsing`` fixture: a test using it fails if decode parses the value at all."""

from __future__ import annotations

from uuid import UUID

import pytest

import consumer.decode
from models.records import Decoded
from tests.unit.builders import MESSAGE_ID

MID = UUID(MESSAGE_ID)
KEEP = object()  # "message_id: whatever" for cases where the envelope itself is unreadable


def check_invariants(d: Decoded) -> None:
    """What every Decoded must satisfy, whatever the outcome."""
    assert (d.event is not None) == (d.outcome == "applied")
    assert (d.reason is not None) == (d.outcome == "dead_lettered")
    if d.outcome == "dead_lettered":
        assert isinstance(d.error, str)
        assert d.error
        assert len(d.error.encode("utf-8")) <= 1024
        assert d.error.isprintable(), d.error
    else:
        assert d.error is None


def assert_invalid(d: Decoded, field: str, message_id: object = MID) -> None:
    """``d`` is dead-lettered as ``invalid``, its error names ``field``, and its message id is ``message_id``
    (unless KEEP)."""
    check_invariants(d)
    assert (d.outcome, d.reason) == ("dead_lettered", "invalid")
    assert d.error is not None
    assert field in d.error, d.error
    if message_id is not KEEP:
        assert d.message_id == message_id


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt of decode to parse the value fails the test: a too large record costs no more than its bytes."""

    class Exploding:
        @staticmethod
        def model_validate_json(_: bytes) -> None:
            raise AssertionError("parsed a too large record")

    monkeypatch.setattr(consumer.decode, "BookingEvent", Exploding)
    monkeypatch.setattr(consumer.decode, "Envelope", Exploding)
