"""Operators' commands: replay, status, outbox republish, dlq list/replay, inbox prune, meeting rekey.

Thin: each command reads its arguments and the BOOKING_* settings, calls its module, and prints the result
(``booking_sessions.ops.terminal``: one line and exit code 2 for anything the operator can fix). The modules are
imported by the command that needs them: ``booking-sessions migrate`` does not load Kafka clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args
from uuid import UUID

import typer

from booking_sessions.ops import terminal as term

if TYPE_CHECKING:
    from booking_sessions.ops.dlq import DlqFilter
    from booking_sessions.retention import TableName

Since = Annotated[
    str | None,
    typer.Option(help="From this time: 2026-11-01T00:00Z, 2026-11-01 (midnight UTC) or a duration ago (6h, 30d)."),
]
Until = Annotated[str | None, typer.Option(help="Before this time (same forms as --since).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change and send nothing.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


# --- replay and status --------------------------------------------------------------------------------------


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
    group_id = group or f"{settings.group_id}.replay.{moment:%Y%m%dT%H%M%SZ}"
    request = ReplayRequest(group_id, start, explicit, end, dry_run, relay)
    tune_gc()
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


# --- outbox, dlq, inbox -------------------------------------------------------------------------------------


def outbox_republish(
    booking: Annotated[list[str] | None, typer.Option(help="A booking id (repeatable).")] = None,
    session: Annotated[list[str] | None, typer.Option(help="A session id (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Rows written at or after this time (as in replay).")] = None,
    until: Annotated[str | None, typer.Option(help="Rows written before this time.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="SessionCreated, SessionUpdated or SessionCancelled (repeatable)."),
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
    """Re-send SessionCreated/SessionUpdated rows with their original message ids, for a downstream that lost them.

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
    from booking_sessions.ops.arguments import choose, parse_range
    from booking_sessions.ops.reports import republish_report
    from booking_sessions.ops.republish import Selection, republish
    from models.events import SessionEventType

    start, end = term.argument(lambda: parse_range(since, until, term.now()))
    types = term.argument(lambda: choose(type_ or [], get_args(SessionEventType), "--type"))
    sessions = tuple(term.argument(lambda: _uuids(session or [])))
    selection = Selection(tuple(booking or ()), sessions, start, end, tuple(sorted(types)), exact)
    if selection.empty and not everything:
        term.fail("choose rows: --booking, --session, --since/--until, --type, or --all for all")
    settings = term.load_settings(kafka=relay, database=True)
    rows, done = term.run(
        term.with_progress(
            lambda progress: republish(settings, selection, dry_run=dry_run, relay=relay, progress=progress)
        )
    )
    term.print_all(republish_report(rows, done))


def _uuids(values: list[str]) -> list[UUID]:
    from booking_sessions.ops.arguments import ArgumentError

    try:
        return [UUID(v) for v in values]
    except ValueError:
        raise ArgumentError(f"--session wants session ids (UUIDs), got {', '.join(values)}") from None


def dlq_list(
    reason: Annotated[list[str] | None, typer.Option(help="Only this dlq-reason (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered at or after this time (as in replay).")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before this time.")] = None,
    limit: Annotated[int, typer.Option(help="Show the last N matches; 0 for all.", min=0)] = 100,
    as_json: AsJson = False,
) -> None:
    """List dead letters: position in the DLQ, reason, error, source topic/partition/offset, key, time.

    Reads BOOKING_DLQ_TOPIC from its beginning to its end offsets at start, without a consumer group.
    Reasons: invalid, unsupported_version, key_mismatch, message_id_conflict, too_large, processing_error.

    Examples:
      booking-sessions dlq list
      booking-sessions dlq list --reason processing_error --since 24h --json
    """
    from booking_sessions.ops.dlq import counts_by_reason, list_dead_letters
    from booking_sessions.ops.reports import dlq_list_report

    wanted = _dlq_filter(reason, since, until, [])
    settings = term.load_settings(kafka=True, database=False)
    found = term.run(
        term.with_progress(lambda progress: list_dead_letters(settings, wanted, limit=limit, progress=progress))
    )
    if as_json:
        term.print_json(
            {"scanned": found.scanned, "matched": found.matched, "dead_letters": [d.as_dict() for d in found.letters]}
        )
    else:
        term.print_all(dlq_list_report(found, counts_by_reason(found.letters)))


def dlq_replay(
    offset: Annotated[
        list[str] | None, typer.Option(help="A DLQ position, partition:offset or offset (repeatable, or 3,4,9).")
    ] = None,
    reason: Annotated[list[str] | None, typer.Option(help="Only this dlq-reason (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered at or after this time.")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before this time.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter (no filter).")] = False,
    dry_run: DryRun = False,
) -> None:
    """Publish selected dead letters to the input topic again, once their cause is fixed; each applies once.

    Each goes with its original key, value and headers (the dlq-* ones removed) plus dlq-replayed-at and
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
    settings = term.load_settings(kafka=True, database=True)
    steps, done = term.run(
        term.with_progress(lambda progress: replay_dead_letters(settings, wanted, dry_run=dry_run, progress=progress))
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


OlderThan = Annotated[str, typer.Option(help="Delete rows older than this: 30d, 12h, 2w (at least 1h).")]
BatchRows = Annotated[int, typer.Option(help="Rows per transaction.", min=1)]


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
    result = term.run(
        term.with_progress(
            lambda progress: prune(settings, table, age, batch_rows=batch_rows, dry_run=dry_run, progress=progress),
            "rows",
        )
    )
    term.print_all(prune_report(result))


def meeting_rekey(
    booking: Annotated[
        list[str] | None, typer.Option("--booking", "--booking-id", help="A booking id (repeatable).")
    ] = None,
    booking_file: Annotated[
        Path | None, typer.Option(help="A file of booking ids, one per line (blank lines and # comments skipped).")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every scheduled session.")] = False,
    batch_rows: Annotated[int, typer.Option(help="Sessions per transaction.", min=1)] = 500,
    dry_run: DryRun = False,
    as_json: AsJson = False,
) -> None:
    """Move existing sessions' meeting links to the current key (after a leaked secret): new room, SessionUpdated.

    For each chosen SCHEDULED session whose link is not under BOOKING_MEETING_SECRET of BOOKING_MEETING_KEY_VERSION,
    sets the new link and writes a SessionUpdated with it to the outbox, in one transaction per batch; the running
    service's relay publishes them, and the video service moves the room. The message id is derived from the
    session id and the key version, and sessions already moved are left alone: running it again changes and sends
    nothing. Refuses a secret that does not match its version's fingerprint. Safe while the service runs; run it
    once every instance runs the new key (README, The meeting secret: the re-key runbook). A filter or --all is
    required.

    Examples:
      booking-sessions meeting rekey --all --dry-run
      booking-sessions meeting rekey --all
      booking-sessions meeting rekey --booking bk_123 --booking bk_124
      booking-sessions meeting rekey --booking-file leaked-bookings.txt
    """
    from booking_sessions.ops.arguments import ArgumentError
    from booking_sessions.ops.rekey import RekeyRequest, read_booking_file, rekey, rekey_report

    def bookings() -> list[str]:
        if booking_file is None:
            return list(booking or [])
        try:
            return [*(booking or []), *read_booking_file(booking_file.read_text().splitlines())]
        except (OSError, UnicodeDecodeError) as error:
            raise ArgumentError(f"--booking-file {booking_file}: cannot read it ({error})") from None

    chosen = tuple(dict.fromkeys(term.argument(bookings)))
    if not chosen and not everything:
        term.fail("choose sessions: --booking, --booking-file, or --all for all")
    if chosen and everything:
        term.fail("choose one of --booking/--booking-file and --all")
    settings = term.load_settings(kafka=False, database=True)
    request = RekeyRequest(chosen, everything, batch_rows, dry_run)
    result = term.run(term.with_progress(lambda progress: rekey(settings, request, progress), "sessions"))
    term.print_json(result.as_dict()) if as_json else term.print_all(rekey_report(result))


def register(app: typer.Typer) -> None:
    """Add the operators' commands to ``app``."""
    app.command("replay", help=term.help_text(replay))(replay)
    app.command("status", help=term.help_text(status))(status)
    outbox = typer.Typer(no_args_is_help=True, help="The outbox of session events: republish, prune.")
    outbox.command("republish", help=term.help_text(outbox_republish))(outbox_republish)
    outbox.command("prune", help=term.help_text(outbox_prune))(outbox_prune)
    dlq = typer.Typer(no_args_is_help=True, help="Dead letters: list them, replay them after a fix.")
    dlq.command("list", help=term.help_text(dlq_list))(dlq_list)
    dlq.command("replay", help=term.help_text(dlq_replay))(dlq_replay)
    inbox = typer.Typer(no_args_is_help=True, help="The inbox of processed message ids.")
    inbox.command("prune", help=term.help_text(inbox_prune))(inbox_prune)
    app.add_typer(outbox, name="outbox")
    app.add_typer(dlq, name="dlq")
    app.add_typer(inbox, name="inbox")
    meeting = typer.Typer(no_args_is_help=True, help="Meeting links and the key they are derived under.")
    meeting.command("rekey", help=term.help_text(meeting_rekey))(meeting_rekey)
    app.add_typer(meeting, name="meeting")
