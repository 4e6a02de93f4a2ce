"""Operators' commands on the dead-letter topic: ``dlq list``, ``dlq replay``.

A command's docstring is its ``--help`` text (``terminal.help_text``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, get_args

import typer

from booking_sessions.ops import terminal as term
from booking_sessions.ops.options import AsJson, DryRun
from booking_sessions.settings_checks import MAX_ROWS
from models.errors import DlqReason

# From the contract's type (CONTRACT, "Dead letters"), so the help names every reason, undecodable included.
_REASONS = ", ".join(get_args(DlqReason))

if TYPE_CHECKING:
    from booking_sessions.ops.dlq import DlqFilter


def dlq_list(
    reason: Annotated[list[str] | None, typer.Option(help=f"Only this dlq-reason (repeatable): {_REASONS}.")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered at or after this time (as in replay).")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before this time.")] = None,
    limit: Annotated[
        int,
        typer.Option(
            help=f"Show the N newest matches, by dlq-failed-at (at most {MAX_ROWS}); 0 for all.", min=0, max=MAX_ROWS
        ),
    ] = 100,
    as_json: AsJson = False,
) -> None:
    """List dead letters: position in the DLQ, reason, error, source topic/partition/offset, key, time.

    Reads BOOKING_DLQ_TOPIC from its beginning to its end offsets at start, without a consumer group.
    Reasons: {reasons}.

    Examples:
      booking-sessions dlq list
      booking-sessions dlq list --reason processing_error --since 24h --json
    """
    from booking_sessions.ops.dlq import list_dead_letters
    from booking_sessions.ops.reports import dlq_list_report

    wanted = _dlq_filter(reason, since, until, [])
    settings = term.load_settings(kafka=True, database=False)
    found = term.run(
        term.with_progress(lambda progress: list_dead_letters(settings, wanted, limit=limit, progress=progress))
    )
    if as_json:
        term.print_json(
            {
                "scanned": found.scanned,
                "matched": found.matched,
                "by_reason": dict(found.by_reason),
                "dead_letters": [d.as_dict() for d in found.letters],
            }
        )
    else:
        term.print_all(dlq_list_report(found, found.by_reason))


def dlq_replay(
    offset: Annotated[
        list[str] | None, typer.Option(help="A DLQ position, partition:offset or offset (repeatable, or 3,4,9).")
    ] = None,
    reason: Annotated[list[str] | None, typer.Option(help=f"Only this dlq-reason (repeatable): {_REASONS}.")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered at or after this time.")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before this time.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter (no filter).")] = False,
    dry_run: DryRun = False,
) -> None:
    """Publish selected dead letters to the input topic again, once their cause is fixed; each applies once.

    Each goes with its original key, value and headers (those this service added removed) plus dlq-replayed-at and
    dlq-replayed-from (DLQ topic/partition/offset). The consumer recorded most dead letters in the inbox as
    dead_lettered, which would make the copy a duplicate: those inbox rows (same id and same payload) are deleted
    in the transaction that waits for the broker's acks. A copy applied once is `applied` in the inbox, so a second
    replay skips it (and a copy sent anyway changes nothing). Never replayed: message_id_conflict, and ids the inbox
    holds with another payload. A filter or --all is required.

    Examples:
      booking-sessions dlq replay --reason processing_error --since 2026-11-24T09:00Z --dry-run
      booking-sessions dlq replay --offset 0:17 --offset 0:18
    """
    from booking_sessions.ops.dlq_replay import replay_dead_letters
    from booking_sessions.ops.reports import dlq_replay_report

    wanted = _dlq_filter(reason, since, until, offset or [])
    if wanted.empty and not everything:
        term.fail("choose dead letters: --offset, --reason, --since/--until, or --all for all")
    if everything and not wanted.empty:  # which one was meant? Narrowing --all silently could miss dead letters
        term.fail("choose one of --all and the filters (--offset, --reason, --since/--until)")
    settings = term.load_settings(kafka=True, database=True)
    # Ctrl-C: the chunks already committed are done; the one in hand rolled back, though its copies may have gone
    # (dropped by the service as repeats of their dead_lettered inbox rows): a second run sends those again.
    after = (
        ""
        if dry_run
        else "; chunks already acknowledged are done, the chunk in hand was rolled back (copies of it "
        "that reached the topic are dropped as duplicates, but for those without a readable message id, which the "
        "service judges again): run the same command again to replay the rest"
    )
    steps, done = term.run(
        term.with_progress(lambda progress: replay_dead_letters(settings, wanted, dry_run=dry_run, progress=progress)),
        on_interrupt=after,
    )
    term.print_all(dlq_replay_report(steps, done, settings.input_topic))


def _dlq_filter(reasons: list[str] | None, since: str | None, until: str | None, positions: list[str]) -> DlqFilter:
    from booking_sessions.ops.arguments import choose, parse_positions, parse_range
    from booking_sessions.ops.dlq import DLQ_REASONS, DlqFilter

    start, end = term.argument(lambda: parse_range(since, until, term.now()))
    return DlqFilter(
        term.argument(lambda: choose(reasons or [], DLQ_REASONS, "--reason")),
        start,
        end,
        term.argument(lambda: parse_positions(positions)),
    )


def dlq_group() -> typer.Typer:
    """The ``dlq`` command group: ``list``, ``replay``."""
    dlq = typer.Typer(no_args_is_help=True, help="Dead letters: list them, replay them after a fix.")
    dlq.command("list", help=term.help_text(dlq_list, reasons=_REASONS))(dlq_list)
    dlq.command("replay", help=term.help_text(dlq_replay))(dlq_replay)
    return dlq
