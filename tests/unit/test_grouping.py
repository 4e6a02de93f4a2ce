"""share_out: the parts of a batch that may be applied in concurrent transactions."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from consumer.grouping import judged_against_inbox, share_out, split_repeats
from models.records import Decoded, Record

BOOKINGS = st.sampled_from([None, "bk_1", "bk_2", "bk_3", "bk_4", "bk_5", "bk_6", "bk_7"])


def decoded(offset: int, booking_id: str | None, with_id: bool) -> Decoded:
    record = Record("booking.events", 0, offset, None, b"{}")
    message_id = uuid.UUID(int=offset + 1) if with_id else None
    return Decoded(record, "0" * 64, message_id, "BookingConfirmed", booking_id, "applied")


@st.composite
def batches(draw: st.DrawFn) -> list[Decoded]:
    shape = draw(st.lists(st.tuples(BOOKINGS, st.booleans()), max_size=60))
    return [decoded(i, booking, with_id) for i, (booking, with_id) in enumerate(shape)]


@given(batches(), st.integers(min_value=1, max_value=5))
def test_every_record_once_in_batch_order_and_each_booking_in_one_part(batch: list[Decoded], parts: int) -> None:
    shared = share_out(batch, parts)

    assert len(shared) == parts
    assert sorted((d for part in shared for d in part), key=lambda d: d.record.offset) == batch
    for part in shared:
        assert [d.record.offset for d in part] == sorted(d.record.offset for d in part)
    owners = [{d.booking_id for d in part if d.booking_id is not None} for part in shared]
    assert sum(len(o) for o in owners) == len(set().union(*owners))


def test_one_part_is_the_batch_itself() -> None:
    batch = [decoded(i, f"bk_{i % 3}", True) for i in range(10)]
    assert share_out(batch, 1) == [batch]
    assert share_out(batch, 0) == [batch]


def test_many_bookings_are_spread_over_every_part() -> None:
    batch = [decoded(i, f"bk_{i}", True) for i in range(400)]
    assert all(len(part) > 50 for part in share_out(batch, 4))


def copy_of(message_id: uuid.UUID, offset: int, sha: str) -> Decoded:
    record = Record("booking.events", 0, offset, b"bk", b"{}", (), 0)
    return Decoded(record, sha, message_id, "BookingConfirmed", "bk", "applied")


def test_later_copies_of_a_message_the_inbox_holds_are_judged_against_what_it_recorded() -> None:
    held, new = uuid.uuid4(), uuid.uuid4()
    # In batch order: held's changed copy came first (offset 0), so split_repeats judged against it; new's were not
    # in the inbox, so its first copy in the batch stays the reference.
    batch = [copy_of(held, 0, "b"), copy_of(held, 1, "a"), copy_of(held, 2, "b"), copy_of(new, 3, "x")]
    batch += [copy_of(new, 4, "x"), copy_of(new, 5, "y")]
    firsts, repeats = split_repeats(batch)
    assert [d.record.offset for d in firsts] == [0, 3]
    assert ([d.record.offset for d in repeats.duplicates], [d.record.offset for d in repeats.conflicts]) == (
        [2, 4],
        [1, 5],
    )

    judged = judged_against_inbox(repeats, {held: "a"})

    assert [d.record.offset for d in judged.duplicates] == [1, 4]  # the exact copy of what the inbox holds
    assert [d.record.offset for d in judged.conflicts] == [2, 5]
    assert judged_against_inbox(repeats, {}) == repeats
