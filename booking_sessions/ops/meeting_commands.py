"""Operators' command on meeting links: ``meeting rekey`` (CONTRACT, "Rows": re-keying after a leaked secret).

A command's docstring is its ``--help`` text (``terminal.help_text``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from booking_sessions.ops import terminal as term
from booking_sessions.ops.options import AsJson, DryRun
from booking_sessions.settings_checks import MAX_ROWS

MAX_BOOKING_FILE_BYTES = 64 * 1024 * 1024  # a million booking ids of 64 characters, with room to spare


def meeting_rekey(
    booking: Annotated[
        list[str] | None, typer.Option("--booking", "--booking-id", help="A booking id (repeatable).")
    ] = None,
    booking_file: Annotated[
        Path | None, typer.Option(help="A file of booking ids, one per line (blank lines and # comments skipped).")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every scheduled session.")] = False,
    batch_rows: Annotated[
        int, typer.Option(help=f"Sessions per transaction (1 to {MAX_ROWS}).", min=1, max=MAX_ROWS)
    ] = 500,
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
    from booking_sessions.ops.arguments import ArgumentError, booking_ids
    from booking_sessions.ops.rekey import RekeyRequest, read_booking_file, rekey, rekey_report

    def bookings() -> list[str]:
        ids = list(booking or [])
        if booking_file is not None:
            try:
                with booking_file.open("rb") as file:
                    # Bounded: /dev/zero or a wrong multi-gigabyte file must not hang the command or fill the memory.
                    data = file.read(MAX_BOOKING_FILE_BYTES + 1)
                if len(data) > MAX_BOOKING_FILE_BYTES:
                    raise ArgumentError(f"--booking-file {booking_file}: larger than {MAX_BOOKING_FILE_BYTES} bytes")
                # utf-8-sig: a file saved with a byte order mark (Windows editors) lost its first booking to it.
                ids += read_booking_file(data.decode("utf-8-sig").splitlines())
            except (OSError, UnicodeDecodeError) as error:
                raise ArgumentError(f"--booking-file {booking_file}: cannot read it ({error})") from None
        return ids

    chosen = term.argument(lambda: booking_ids(bookings()))
    if not chosen and not everything:
        term.fail("choose sessions: --booking, --booking-file, or --all for all")
    if chosen and everything:
        term.fail("choose one of --booking/--booking-file and --all")
    settings = term.load_settings(kafka=False, database=True)
    request = RekeyRequest(chosen, everything, batch_rows, dry_run)
    after = (
        ""
        if dry_run
        else "; the batches re-keyed so far stay so, with their SessionUpdated: run the same command again for the "
        "rest (sessions already under the key are skipped)"
    )
    result = term.run(
        term.with_progress(lambda progress: rekey(settings, request, progress), "sessions"), on_interrupt=after
    )
    term.print_json(result.as_dict()) if as_json else term.print_all(rekey_report(result))


def meeting_group() -> typer.Typer:
    """The ``meeting`` command group: ``rekey``."""
    meeting = typer.Typer(no_args_is_help=True, help="Meeting links and the key they are derived under.")
    meeting.command("rekey", help=term.help_text(meeting_rekey))(meeting_rekey)
    return meeting
