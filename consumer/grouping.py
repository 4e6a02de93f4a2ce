"""Pure: how one batch's decoded records are grouped: first copies and repeats, each booking's events, and the
parts that may be applied in concurrent transactions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from models.events import BookingEvent
from models.records import Decoded


@dataclass(frozen=True, slots=True)
class Repeats:
    """Records whose message id appeared earlier: harmless duplicates (the same payload SHA-256) or
    ``message_id_conflict``s (another one; CONTRACT "What each event does"), each list in batch order."""

    duplicates: list[Decoded]
    conflicts: list[Decoded]


def split_repeats(decoded: Sequence[Decoded]) -> tuple[list[Decoded], Repeats]:
    """``decoded`` (one batch, in order) -> (the first record of each message id, with every record that has no id,
    in batch order; the later copies as ``Repeats``, judged by their payload SHA-256 against the first's)."""
    first_hash: dict[UUID, str] = {}
    firsts: list[Decoded] = []
    repeats = Repeats([], [])
    for d in decoded:
        if d.message_id is None:
            firsts.append(d)
        elif d.message_id not in first_hash:
            first_hash[d.message_id] = d.payload_sha256
            firsts.append(d)
        elif first_hash[d.message_id] == d.payload_sha256:
            repeats.duplicates.append(d)
        else:
            repeats.conflicts.append(d)
    return firsts, repeats


def classify_repeats(earlier: Sequence[Decoded], known_hashes: dict[UUID, str]) -> Repeats:
    """Records whose message id the inbox held already, sorted by the SHA-256 recorded for it (``known_hashes``:
    message id -> hex digest): the same payload is a duplicate, another one a ``message_id_conflict`` (CONTRACT
    "What each event does")."""
    repeats = Repeats([], [])
    for d in earlier:
        if d.message_id is not None and known_hashes.get(d.message_id) == d.payload_sha256:
            repeats.duplicates.append(d)
        else:
            repeats.conflicts.append(d)
    return repeats


def judged_against_inbox(repeats: Repeats, recorded: Mapping[UUID, str]) -> Repeats:
    """A batch's later copies (``repeats``, judged by ``split_repeats`` against the batch's first copy) judged
    again, for each message id the inbox held already, against the payload SHA-256 recorded for it (``recorded``):
    that copy is the message, so an exact copy of it is a duplicate even when a changed one came first in the batch
    (CONTRACT "What each event does"). Each list stays in batch order."""

    def same_as_recorded(d: Decoded, same_as_first: bool) -> bool:
        reference = recorded.get(d.message_id) if d.message_id is not None else None
        return same_as_first if reference is None else reference == d.payload_sha256

    marked = [(d, True) for d in repeats.duplicates] + [(d, False) for d in repeats.conflicts]
    marked.sort(key=lambda pair: (pair[0].record.topic, pair[0].record.partition, pair[0].record.offset))
    judged = Repeats([], [])
    for d, same_as_first in marked:
        (judged.duplicates if same_as_recorded(d, same_as_first) else judged.conflicts).append(d)
    return judged


def group_events(decoded: Iterable[Decoded]) -> dict[str, list[BookingEvent]]:
    """booking id -> its applied events in partition order (the order of ``decoded``); records without an event
    (ignored, dead-lettered) are left out."""
    groups: dict[str, list[BookingEvent]] = {}
    for d in decoded:
        if d.event is not None:
            groups.setdefault(d.event.booking_id, []).append(d.event)
    return groups


def share_out(firsts: Sequence[Decoded], parts: int) -> list[list[Decoded]]:
    """``firsts`` (one record per message id) in ``parts`` lists, every booking's records in one of them.

    Each list keeps the batch order, so a booking's events stay in order. Bookings are disjoint between the
    lists, and so are message ids, sessions and outbox ids (all derived from the booking or the message): the
    transactions applying them touch disjoint rows and never wait for one another. A record without a booking
    id (undecodable, or of a type not known yet) only writes its inbox row, so any list will do.
    """
    if parts <= 1:
        return [list(firsts)]
    shared: list[list[Decoded]] = [[] for _ in range(parts)]
    for d in firsts:
        owner = d.booking_id if d.booking_id is not None else d.message_id
        shared[hash(owner) % parts if owner is not None else 0].append(d)
    return shared
