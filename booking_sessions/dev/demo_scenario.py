"""What ``booking-sessions demo`` publishes: seven bookings and their events, in two steps.

The story each booking tells (CONTRACT, "What each event does"): an auto-approval; a manual approval, then its
confirmation; a confirmation delivered three times; two confirmations raced from two producers; a reschedule by a
newer snapshot; a cancellation after the announcement; a cancellation that overtakes its approval. Plus one
malformed record for the DLQ (CONTRACT, "Dead letters").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.events import BookingEvent, BookingType
from models.records import OutgoingRecord
from producer.bookings import as_record, booking_event

# One step: a title to print and the records to publish, in order.
Steps = list[tuple[str, list[OutgoingRecord]]]
KINDS: dict[str, BookingType] = {
    "approved": "BookingApproved",
    "confirmed": "BookingConfirmed",
    "cancelled": "BookingCancelled",
}
REASON = "the student moved away"
NAMES = ("auto", "manual", "triple", "race", "other", "cancelled", "overtaken")


class Scenario:
    """The demo's bookings, ids ``demo-<tag>-<name>``, and their events for ``topic``.

    Times count from ``base``: now, in whole seconds, UTC; sessions start 7 days later (8 after the reschedule).
    """

    def __init__(self, tag: str, topic: str) -> None:
        self.topic = topic
        self.bookings = {name: f"demo-{tag}-{name}" for name in NAMES}
        self.base = datetime.now(UTC).replace(microsecond=0)
        # Published in step 1 and again, with the same message id, in step 2: a redelivery.
        self.approved_manual = self.event("approved", "manual", 0)

    def event(self, kind: str, name: str, minutes: int, *, start_days: int = 7, **extra: object) -> BookingEvent:
        """An event of ``kind`` (a key of ``KINDS``) for booking ``name``, occurred ``minutes`` after ``base``.

        ``extra`` goes to ``producer.bookings.booking_event`` (``auto_approved``, ``cancellation_reason``).
        Raises KeyError for an unknown kind or name.
        """
        return booking_event(
            KINDS[kind],
            self.bookings[name],
            student_id=f"student-{name}",
            instructor_id="instructor-ada",
            scheduled_start=self.base + timedelta(days=start_days),
            duration_minutes=60,
            title=f"Algebra II ({name})",
            occurred_at=self.base + timedelta(minutes=minutes),
            **extra,  # type: ignore[arg-type]
        )

    def record(self, event: BookingEvent) -> OutgoingRecord:
        """``event`` as the upstream service publishes it: keyed by booking id, to ``topic``."""
        return as_record(event, self.topic)

    def first_steps(self) -> Steps:
        """Step 1, published while the service runs (the raced pair is ``raced()``)."""
        confirmed_triple = self.event("confirmed", "triple", 1)
        return [
            ("an auto-approved booking", [self.record(self.event("approved", "auto", 0, auto_approved=True))]),
            ("a manual approval ...", [self.record(self.approved_manual)]),
            ("... an event for a second booking, interleaved", [self.record(self.event("approved", "other", 0))]),
            ("... then the confirmation", [self.record(self.event("confirmed", "manual", 2))]),
            ("the same confirmation delivered three times", [self.record(confirmed_triple)] * 3),
            (
                "a malformed record (goes to the DLQ)",
                [OutgoingRecord(self.topic, self.bookings["other"].encode(), b"{oops")],
            ),
            ("a booking approved (to be cancelled later)", [self.record(self.event("approved", "cancelled", 0))]),
            (
                "a cancellation that overtakes its booking's approval",
                [self.record(self.event("cancelled", "overtaken", 4))],
            ),
        ]

    def raced(self) -> list[BookingEvent]:
        """Two confirmations of one booking (two message ids, same instant), one per upstream producer."""
        return [self.event("confirmed", "race", 3), self.event("confirmed", "race", 3)]

    def later_steps(self) -> Steps:
        """Step 2: a redelivery, a reschedule, a cancellation, and the overtaken booking's late events."""
        reschedule = self.event("confirmed", "other", 5, start_days=8)
        late = [self.event("approved", "overtaken", 0), self.event("confirmed", "overtaken", 1)]
        return [
            ("a redelivered message id (the manual approval, again)", [self.record(self.approved_manual)]),
            ("a reschedule of the second booking (a newer snapshot)", [self.record(reschedule)]),
            (
                "the cancellation of the approved booking",
                [self.record(self.event("cancelled", "cancelled", 6, cancellation_reason=REASON))],
            ),
            ("the overtaken booking's late approval and confirmation", [self.record(e) for e in late]),
        ]
