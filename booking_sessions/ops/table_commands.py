"""Operators' commands on the service's own tables: ``outbox republish``, ``outbox prune``, ``inbox prune``.

A command's docstring is its ``--help`` text (``terminal.help_text``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, get_args
from uuid import UUID

import typer

from booking_sessions.ops import terminal as term
from booking_sessions.ops.options import BatchRows, DryRun, OlderThan
from models.events import SessionEventType

# From the contract's type (CONTRACT, "Output"): every kind of row the outbox holds, SessionCancelled included.
_TYPES = ", ".join(get_args(SessionEventType))

if TYPE_CHECKING:
    from booking_sessions.retention import TableName


def outbox_republish(
    booking: Annotated[list[str] | None, typer.Option(help="A booking id (repeatable).")] = None,
    session: Annotated[list[str] | None, typer.Option(help="A session id (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Rows written at or after this time (as in replay).")] = None,
    until: Annotated[str | None, typer.Option(help="Rows written before this time.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help=f"{_TYPES} (repeatable)."),
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Only the matching rows, not the later rows of their bookings.")
    ] = False,
    everything: Annotated[bool, typer.Option("--all", help="Every row of the outbox (no filter).")] = False,
    relay: Annotated[
        bool, typer.Option("--relay", help="Publish from this process now (needs the broker), not only queue.")
    ] = False,
    dry_run: DryRun = False,
) -> None:
    """Re-send {types} rows with their original message ids, for a downstream that lost them.

    The chosen rows are handed back to the outbox relay (published_at set to NULL, under the relay's lock): the
    relay sends them again, byte for byte and with the same message_id, in id order, so each booking's events
    stay in order. With the service running that is enough: its relay sends them within a second. Without it,
    add --relay to publish from here (it also sends any other row waiting). Each chosen booking's later rows go
    along (unless --exact), so every booking ends on its newest state. A filter or --all is required.

    Examples:
      booking-sessions outbox republish --booking bk_123 --booking bk_124
      booking-sessions outbox republish --type SessionCreated --since 2026-11-24T00:00Z --until 2026-11-25 --dry-run
      booking-sessions outbox republish --session 0b5f3c1e-6f4a-5d7e-9b1c-2a3d4e5f6a7b --relay
    """
    from booking_sessions.ops.arguments import booking_ids, choose, parse_range
    from booking_sessions.ops.reports import republish_report
    from booking_sessions.ops.republish import Selection, republish

    start, end = term.argument(lambda: parse_range(since, until, term.now()))
    types = term.argument(lambda: choose(type_ or [], get_args(SessionEventType), "--type"))
    sessions = tuple(term.argument(lambda: _uuids(session or [])))
    bookings = term.argument(lambda: booking_ids(booking or ()))
    selection = Selection(bookings, sessions, start, end, tuple(sorted(types)), exact)
    if selection.empty and not everything:
        term.fail("choose rows: --booking, --session, --since/--until, --type, or --all for all")
    if everything and not selection.empty:  # which one was meant? Narrowing --all silently could miss rows
        term.fail("choose one of --all and the filters (--booking, --session, --since/--until, --type)")
    settings = term.load_settings(kafka=relay, database=True)
    # Ctrl-C: the rows were handed back to the relay in one transaction, or not at all; once handed back, the
    # running service's relay sends them (in order, at least once) whether or not this process was sending too.
    after = (
        ""
        if dry_run
        else "; the rows chosen were handed back to the relay at once or not at all: the running service's relay "
        "sends them if they were, else run the same command again"
    )
    rows, done = term.run(
        term.with_progress(
            lambda progress: republish(settings, selection, dry_run=dry_run, relay=relay, progress=progress)
        ),
        on_interrupt=after,
    )
    term.print_all(republish_report(rows, done))


def _uuids(values: list[str]) -> list[UUID]:
    from booking_sessions.ops.arguments import ArgumentError

    try:
        return [UUID(v) for v in values]
    except ValueError:
        raise ArgumentError(f"--session wants session ids (UUIDs), got {', '.join(values)}") from None


def inbox_prune(older_than: OlderThan, batch_rows: BatchRows = 5000, dry_run: DryRun = False) -> None:
    """Delete inbox rows processed longer ago than --older-than, in bounded batches, each its own short
    transaction; safe while the service runs (`run` also does it by itself: BOOKING_INBOX_RETENTION).

    The sessions keep their snapshot version, so a redelivered pruned event still changes nothing (CONTRACT).
    The minimum age is 1 hour.

    Examples:
      booking-sessions inbox prune --older-than 30d --dry-run
      booking-sessions inbox prune --older-than 30d
    """
    _prune("inbox", older_than, batch_rows, dry_run)


def outbox_prune(older_than: OlderThan, batch_rows: BatchRows = 5000, dry_run: DryRun = False) -> None:
    """Delete outbox rows published longer ago than --older-than, in bounded batches, each its own short
    transaction; unpublished rows are never deleted. Safe while the service runs (`run` also does it by itself:
    BOOKING_OUTBOX_RETENTION). A pruned row can no longer be re-sent by `outbox republish`.

    Examples:
      booking-sessions outbox prune --older-than 7d --dry-run
      booking-sessions outbox prune --older-than 7d
    """
    _prune("outbox", older_than, batch_rows, dry_run)


def _prune(table: TableName, older_than: str, batch_rows: int, dry_run: bool) -> None:
    from booking_sessions.ops.arguments import parse_duration
    from booking_sessions.ops.prune import check_age, prune
    from booking_sessions.ops.reports import prune_report

    age = term.argument(lambda: parse_duration(older_than))
    term.argument(lambda: check_age(age))
    settings = term.load_settings(kafka=False, database=True)
    after = "" if dry_run else "; the batches deleted so far stay deleted: run the same command again to go on"
    result = term.run(
        term.with_progress(
            lambda progress: prune(settings, table, age, batch_rows=batch_rows, dry_run=dry_run, progress=progress),
            "rows",
        ),
        on_interrupt=after,
    )
    term.print_all(prune_report(result))


def outbox_group() -> typer.Typer:
    """The ``outbox`` command group: ``republish``, ``prune``."""
    outbox = typer.Typer(no_args_is_help=True, help="The outbox of session events: republish, prune.")
    outbox.command("republish", help=term.help_text(outbox_republish, types="/".join(get_args(SessionEventType))))(
        outbox_republish
    )
    outbox.command("prune", help=term.help_text(outbox_prune))(outbox_prune)
    return outbox


def inbox_group() -> typer.Typer:
    """The ``inbox`` command group: ``prune``."""
    inbox = typer.Typer(no_args_is_help=True, help="The inbox of processed message ids.")
    inbox.command("prune", help=term.help_text(inbox_prune))(inbox_prune)
    return inbox
