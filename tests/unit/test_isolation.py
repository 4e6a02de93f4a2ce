"""Isolating poison (consumer/isolation.py): the halves that apply are kept, in order; each single record that still
fails is raised as Poison("processing_error") and dead-lettered; a transient fault stops the isolation for a retry."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from consumer.isolation import DeadLetterNotRecorded, alone, isolate
from models.errors import Poison
from models.faults import is_transient
from models.records import Decoded, Record


def decoded(offset: int, booking: str) -> Decoded:
    return Decoded(
        Record("t", 0, offset, booking.encode(), b"{}"), "0" * 64, None, "BookingApproved", booking, "applied"
    )


class Database:
    """Refuses every transaction that holds a poison booking, as PostgreSQL would the whole transaction."""

    def __init__(self, poison: set[str], transient: bool = False) -> None:
        self.poison = poison
        self.transient = transient
        self.committed: list[list[int]] = []
        self.dead: list[tuple[int, Poison]] = []

    async def transact(self, part: Sequence[Decoded]) -> str:
        if any(d.booking_id in self.poison for d in part):
            raise ConnectionError("gone") if self.transient else ValueError("value out of range")
        self.committed.append([d.record.offset for d in part])
        return "applied"

    async def dead_letter(self, record: Decoded, poison: Poison) -> str:
        self.dead.append((record.record.offset, poison))
        return "dead"


async def test_only_the_poison_records_are_dead_lettered_and_the_rest_applies_in_order() -> None:
    part = [decoded(i, "bad" if i in (2, 5) else f"bk_{i}") for i in range(8)]
    db = Database({"bad"})

    results = await isolate(part, ValueError("batch refused"), db.transact, db.dead_letter)

    assert [o for piece in db.committed for o in piece] == [0, 1, 3, 4, 6, 7]
    assert [offset for offset, _ in db.dead] == [2, 5]
    assert all(p.reason == "processing_error" and "ValueError" in str(p) for _, p in db.dead)
    assert results.count("dead") == 2


async def test_a_single_record_alone_raises_poison_and_a_transient_fault_as_it_is() -> None:
    with pytest.raises(Poison) as raised:
        await alone(decoded(0, "bad"), Database({"bad"}).transact)
    assert raised.value.reason == "processing_error"
    with pytest.raises(ConnectionError):
        await alone(decoded(0, "bad"), Database({"bad"}, transient=True).transact)
    part = [decoded(i, "bad" if i == 1 else "ok") for i in range(4)]
    with pytest.raises(ConnectionError):
        await isolate(
            part, ValueError("batch refused"), Database({"bad"}, transient=True).transact, Database(set()).dead_letter
        )


async def test_a_dead_letter_that_cannot_be_recorded_is_retried_not_fatal() -> None:
    # Before: the dead letter's own error (its inbox row refused for a reason not transient) left the batch as it
    # was, and the process exited: on restart the same batch, the same error, a crash loop.
    db = Database({"bad"})

    async def refused(record: Decoded, poison: Poison) -> str:
        raise ValueError("cannot record it")

    part = [decoded(i, "bad" if i == 1 else f"bk_{i}") for i in range(4)]
    with pytest.raises(DeadLetterNotRecorded, match=r"recording a dead letter failed: .*cannot record it") as raised:
        await isolate(part, ValueError("batch refused"), db.transact, refused)
    assert is_transient(raised.value)
    with pytest.raises(DeadLetterNotRecorded):
        await isolate(part[1:2], ValueError("batch refused"), db.transact, refused)
    gone = Database(set(), transient=True)

    async def away(record: Decoded, poison: Poison) -> str:
        raise ConnectionError("gone")

    with pytest.raises(ConnectionError):  # a transient fault of the dead letter's stays as it is
        await isolate(part[1:2], ValueError("batch refused"), gone.transact, away)
