"""A workload of many bookings' events, the reference any correct run over it must leave, and the checks that
compare a database and the output topic with that reference (CONTRACT: each valid event applied once in effect,
nothing lost, one session and one SessionCreated per booking, output in commit order per booking)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from typing import Any

from booking_sessions.settings import Settings
from consumer.decide import details_of, version_of
from consumer.ids import session_created_id, session_id
from models.events import BookingEvent
from tests.integration.bookings import START, event
from tests.integration.harness import query, read_json
from tests.waiting import eventually


def workload(bookings: int, seed: int = 1) -> list[BookingEvent]:
    """Approvals, confirmations, repeats and reschedules over ``bookings`` bookings, interleaved."""
    rng = random.Random(seed)
    per_booking: list[list[BookingEvent]] = []
    for i in range(bookings):
        name = f"bk_{i:04d}"
        approved = event("BookingApproved", name, 0)
        confirmed = event("BookingConfirmed", name, 1)
        chain = [approved, confirmed, confirmed]
        if i % 3 == 0:
            chain.append(event("BookingConfirmed", name, 2, scheduled_start=START + timedelta(hours=1)))
        per_booking.append(chain)
    stream: list[BookingEvent] = []
    while any(per_booking):  # interleave bookings, each booking's own events kept in order
        chain = rng.choice([c for c in per_booking if c])
        stream.append(chain.pop(0))
    return stream


def reference(events: list[BookingEvent]) -> dict[str, Any]:
    """What any correct run must leave: newest snapshot per booking, learners from confirmations."""
    newest: dict[str, BookingEvent] = {}
    learners: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.booking_id not in newest or version_of(e) > version_of(newest[e.booking_id]):
            newest[e.booking_id] = e
        if e.type == "BookingConfirmed":
            learners[e.booking_id].add(e.booking.student_id)
    return {
        "sessions": {b: (details_of(e), version_of(e)) for b, e in newest.items()},
        "learners": {b: s for b, s in learners.items()},
        "message_ids": {e.message_id for e in events},
    }


async def assert_matches_reference(settings: Settings, database_url: str, events: list[BookingEvent]) -> None:
    """The database and the output topic hold exactly what reference(events) says: rows, learners, inbox,
    every outbox row published in order per booking, one SessionCreated per booking, no dead letter."""
    expected = reference(events)
    rows = await query(database_url, "SELECT * FROM live_sessions")
    got = {
        r["booking_request_id"]: (
            details_of_row(r),
            (r["snapshot_occurred_at"], r["snapshot_message_id"]),
        )
        for r in rows
    }
    assert got == expected["sessions"]
    assert all(r["id"] == session_id(r["booking_request_id"]) for r in rows)
    learners = await query(
        database_url,
        "SELECT s.booking_request_id AS b, p.user_id AS u FROM session_participants p"
        " JOIN live_sessions s ON s.id = p.session_id",
    )
    got_learners: dict[str, set[str]] = defaultdict(set)
    for r in learners:
        got_learners[r["b"]].add(r["u"])
    assert got_learners == expected["learners"]
    inbox = await query(database_url, "SELECT message_id, outcome FROM inbox_messages")
    assert {r["message_id"] for r in inbox} == expected["message_ids"]
    assert {r["outcome"] for r in inbox} == {"applied"}
    # Output: every outbox row published; the topic holds those ids and no others (copies only of them).
    outbox = await query(database_url, "SELECT message_id, published_at FROM outbox_messages")
    assert all(r["published_at"] is not None for r in outbox)
    messages = await read_json(settings, settings.output_topic, len(outbox))
    assert {m["body"]["message_id"] for m in messages} == {str(r["message_id"]) for r in outbox}
    # In order per booking: the first copy of each id appears in outbox (commit) order within its partition.
    outbox_order = {
        str(r["message_id"]): i
        for i, r in enumerate(await query(database_url, "SELECT message_id FROM outbox_messages ORDER BY id"))
    }
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for m in messages:  # read_topic returns each partition's records in offset order
        mid = m["body"]["message_id"]
        if mid not in seen:
            seen.add(mid)
            first_seen[m["body"]["booking_id"]].append(outbox_order[mid])
    assert all(order == sorted(order) for order in first_seen.values())
    created = {m["body"]["message_id"] for m in messages if m["body"]["type"] == "SessionCreated"}
    assert created == {str(session_created_id(session_id(b))) for b in expected["sessions"]}
    dead = await query(database_url, "SELECT count(*) AS n FROM inbox_messages WHERE outcome = 'dead_lettered'")
    assert dead == [{"n": 0}]


def details_of_row(row: dict[str, Any]) -> Any:
    """A live_sessions row's details as decide() computes them (SessionDetails)."""
    from consumer.decide import SessionDetails

    return SessionDetails(
        row["instructor_id"], row["student_id"], row["title"], row["scheduled_start"], row["duration_minutes"]
    )


async def count(database_url: str, sql: str) -> int:
    """The ``n`` column of the one row ``sql`` returns."""
    [row] = await query(database_url, sql)
    return int(row["n"])


async def all_applied_and_published(database_url: str, events: list[BookingEvent], timeout_s: float = 90) -> None:
    """Wait (up to ``timeout_s``) until every distinct message id of ``events`` is in the inbox and no
    outbox row waits; AssertionError from eventually otherwise."""
    wanted = len({e.message_id for e in events})

    async def done() -> bool:
        applied = await count(database_url, "SELECT count(*) AS n FROM inbox_messages")
        waiting = await count(database_url, "SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL")
        assert applied == wanted and waiting == 0, f"{applied}/{wanted} applied, {waiting} outbox rows waiting"
        return True

    await eventually(done, what="every event applied and every outbox row published", timeout_s=timeout_s)
