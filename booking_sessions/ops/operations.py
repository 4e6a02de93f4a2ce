"""Operators' commands: replay, status, outbox republish, dlq list/replay, inbox prune, meeting rekey.

Thin: each command reads its arguments and the BOOKING_* settings, calls its module, and prints the result
(``booking_sessions.ops.terminal``: one line and exit code 2 for anything the operator can fix). The modules are
imported by the command that needs them: ``booking-sessions migrate`` does not load Kafka clients. Here: ``replay``,
``status`` and ``register``; the command groups live in ``table_commands`` (outbox, inbox), ``dlq_commands`` and
``meeting_commands``. A command's docstring is its ``--help`` text (``terminal.help_text``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from booking_sessions.ops import terminal as term
from booking_sessions.ops.dlq_commands import dlq_group
from booking_sessions.ops.meeting_commands import meeting_group
from booking_sessions.ops.options import AsJson, Since
from booking_sessions.ops.table_commands import inbox_group, outbox_group


def replay(
    since: Since = None,
    offsets: Annotated[
        str | None, typer.Option(help="Start these partitions at these offsets, e.g. 0:120,3:55 (only these).")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Stop before the first record at or after this time (default: the end offsets at start)."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Consumer group of this replay (default: <BOOKING_GROUP_ID>.replay.<UTC time>)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would change; write, send and commit nothing.")
    ] = False,
    relay: Annotated[bool, typer.Option("--relay", help="Also publish the outbox rows it wrote, now.")] = False,
    as_json: AsJson = False,
) -> None:
    """Re-consume the input topic through the same code as `run`; what was applied changes nothing.

    Reads BOOKING_INPUT_TOPIC from the beginning (or --since, or --offsets) up to the end offsets taken at start
    (or --until), in batches through the service's own processor: the inbox drops what was applied, the upserts
    keep the newest snapshot, new sessions get the same ids and meeting links as they would have live. Into an
    empty database it rebuilds every row (needs the service's BOOKING_MEETING_SECRET). The live group is never
    touched: the replay has its own group and commits there after each batch, so running again with the same
    --group resumes an interrupted replay. Dead letters go to the DLQ as in `run`. Outbox rows are left to the
    running service's relay unless --relay.

    Examples:
      booking-sessions replay --dry-run
      booking-sessions replay --since 2026-11-01T00:00Z --until 2026-11-02T00:00Z
      booking-sessions replay --offsets 0:120,3:55
      booking-sessions replay --group booking-sessions.replay.20261125T101500Z   # resume
    """
    from rich.progress import Progress

    from booking_sessions.observe.tracing import tracing
    from booking_sessions.ops.arguments import parse_offsets, parse_range
    from booking_sessions.ops.replay import ReplayRequest, ReplaySummary, replay_topic
    from booking_sessions.ops.reports import replay_report
    from booking_sessions.runtime import tune_gc

    moment = term.now()
    start, end = term.argument(lambda: parse_range(since, until, moment))
    explicit = term.argument(lambda: parse_offsets(offsets)) if offsets is not None else None
    if start is not None and explicit is not None:
        term.fail("choose one of --since and --offsets")
    settings = term.load_settings(kafka=True, database=True)
    # To the millisecond: two replays started within one second (a script's) had one group, and the second resumed
    # the first's offsets instead of reading what it was asked to.
    group_id = group or f"{settings.group_id}.replay.{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"
    request = ReplayRequest(group_id, start, explicit, end, dry_run, relay)
    tune_gc()
    # After Ctrl-C, SIGTERM, or a failure half-way (a silent server): a rerun without --group would start again.
    resume = "" if dry_run else f"; to resume, run the same command with --group {group_id}"

    async def traced(progress: Progress) -> ReplaySummary:
        with tracing():  # off unless OTEL_* asks for it (README, "Tracing")
            return await replay_topic(settings, request, progress)

    summary = term.run(term.with_progress(traced), on_interrupt=resume)
    term.print_json(summary.as_dict()) if as_json else term.print_all(replay_report(summary))


def status(as_json: AsJson = False) -> None:
    """The live group's committed offset, end offset and lag per partition; outbox backlog; DLQ and inbox size.

    Read-only, and it does not join the group: the running service sees no rebalance.

    Examples:
      booking-sessions status
      booking-sessions status --json | jq .lag
    """
    from booking_sessions.ops.reports import status_report
    from booking_sessions.ops.status import read_status

    settings = term.load_settings(kafka=True, database=True)
    found = term.run(lambda: read_status(settings))
    term.print_json(found.as_dict()) if as_json else term.print_all(status_report(found))


def register(app: typer.Typer) -> None:
    """Add the operators' commands to ``app``, in the order ``--help`` lists them."""
    app.command("replay", help=term.help_text(replay))(replay)
    app.command("status", help=term.help_text(status))(status)
    app.add_typer(outbox_group(), name="outbox")
    app.add_typer(dlq_group(), name="dlq")
    app.add_typer(inbox_group(), name="inbox")
    app.add_typer(meeting_group(), name="meeting")
