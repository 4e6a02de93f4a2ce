"""What each stage must have left behind: a fast wrong answer is no benchmark."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from bench.databases import Rows
from bench.report import Check


def rows_check(
    name: str,
    rows: Rows,
    *,
    inbox: int,
    bookings: int,
    cancelled: int,
    pruned_inbox: int = 0,
    pruned_outbox: int = 0,
) -> Check:
    """One session, learner and reservation per booking, one inbox row per message id, ``cancelled`` sessions
    and their reservations CANCELLED, one SessionCreated per session but those cancelled before they were announced,
    one SessionCancelled per announced cancelled session, and nothing left unpublished.

    After retention (the soak): inbox rows plus ``pruned_inbox`` make one per message id; once published outbox rows
    were pruned (``pruned_outbox``) the outbox no longer tells which events it announced, so its counts are left out
    and only "nothing unpublished" remains of them; the session tables, which retention never touches, still say
    that every event was applied."""
    wanted = {
        "inbox": (rows.inbox + pruned_inbox, inbox),
        "sessions": (rows.sessions, bookings),
        "participants": (rows.participants, bookings),
        "reservations": (rows.reservations, bookings),
        "cancelled": (rows.cancelled, cancelled),
        "reservations cancelled": (rows.reservations_cancelled, cancelled),
        "SessionCreated": (rows.session_created, bookings - rows.unannounced),
        "SessionCancelled": (rows.session_cancelled, cancelled - rows.unannounced),
        "unpublished": (rows.unpublished, 0),
    }
    if pruned_outbox:
        del wanted["SessionCreated"], wanted["SessionCancelled"]
    wrong = {k: f"{got} (want {want})" for k, (got, want) in wanted.items() if got != want}
    detail = (
        f"{rows.sessions:,} sessions ({rows.cancelled:,} cancelled, {rows.unannounced:,} of them never announced), "
        f"{rows.inbox:,} inbox rows, {rows.session_created:,} SessionCreated, {rows.session_updated:,} "
        f"SessionUpdated, {rows.session_cancelled:,} SessionCancelled"
    )
    if pruned_inbox or pruned_outbox:
        detail += f"; pruned {pruned_inbox:,} inbox and {pruned_outbox:,} outbox rows"
    return Check(f"{name} rows", not wrong, detail if not wrong else f"{detail}; wrong: {wrong}")


def naive_rows_check(rows: Rows, *, bookings: int, cancelled: int) -> Check:
    """The baseline has no inbox and publishes nothing; the rest as for the service."""
    unpublished = dataclasses.replace(rows, unpublished=0)
    return rows_check("(c) naive", unpublished, inbox=0, bookings=bookings, cancelled=cancelled)


def output_check(name: str, records: Sequence[ConsumerRecord[bytes, bytes]], outbox: int) -> Check:
    """Every outbox row reached the output topic (at least once: a retried send may repeat one)."""
    ids = {dict(r.headers or ()).get("message_id") for r in records}
    ok = len(ids) == outbox and len(records) >= outbox
    return Check(
        f"{name} published", ok, f"{len(records):,} records, {len(ids):,} distinct ids, {outbox:,} outbox rows"
    )


def duplicates_check(name: str, seen: int, expected: int) -> Check:
    return Check(f"{name} duplicates", seen == expected, f"{seen:,} reported, {expected:,} expected")
