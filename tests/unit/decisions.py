"""What the decide() tests share: the meeting-link function and clock they pass in, and for the examples, fixed
message ids, bk_123's session id, a session row as decide creates it, and a cancellation event."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from consumer.decide import SessionRow, decide
from consumer.ids import meeting_link, session_id
from models.events import BookingEvent
from tests.unit.builders import event

SECRET = b"unit-test-secret"
BASE_URL = "https://meet.jit.si"
NOW = datetime(2026, 11, 24, 12, 0, 0, 123000, tzinfo=UTC)


def link_for(sid: UUID) -> str:
    """The meeting link of session ``sid`` under the tests' secret and base URL."""
    return meeting_link(BASE_URL, sid, SECRET)


# --- for the examples ---------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ID_A = UUID("00000000-0000-4000-8000-00000000000a")
ID_B = UUID("00000000-0000-4000-8000-00000000000b")
ID_C = UUID("00000000-0000-4000-8000-00000000000c")
SID = session_id("bk_123")


def created_row(e: BookingEvent) -> SessionRow:
    """The row decide() writes for ``e`` on a booking it has not seen."""
    decision = decide(None, [e], link_for, NOW)
    assert decision.session is not None
    return decision.session


def cancelled(message_id: UUID, occurred_at: datetime, reason: str | None = "ill", **fields: object) -> BookingEvent:
    """A BookingCancelled of bk_123 with ``reason`` (None: no reason given)."""
    return event(message_id, occurred_at, type="BookingCancelled", cancellation_reason=reason, **fields)  # type: ignore[arg-type]
