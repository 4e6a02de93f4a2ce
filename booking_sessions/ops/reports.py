"""Pure: what the operators' commands print (rich tables and lines); the commands decide where it goes.

Text from a topic, a row or the settings enters only as ``untrusted.cell`` or ``untrusted.line``: never as markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from booking_sessions.ops.dlq import DeadLetter, Scan
from booking_sessions.ops.dlq_replay import ReplayOutcome, Step
from booking_sessions.ops.prune import PruneResult
from booking_sessions.ops.replay import ReplaySummary
from booking_sessions.ops.republish import OutboxRow, Republished
from booking_sessions.ops.status import Status
from booking_sessions.ops.untrusted import cell, line, visible

ROWS_SHOWN = 20  # long selections: the first rows, then a count


def _table(*headers: str, **options: Any) -> Table:
    """A Rich table whose cells fold rather than end in an ellipsis: on a narrow terminal an id, a key or a position
    an operator copies into the next command (``dlq replay --offset 0:3``) is shown whole, over two lines if need be
    (a newcomer's find: ``0:3…`` at 40 columns)."""
    table = Table(*headers, **options)
    for column in table.columns:
        column.overflow = "fold"
    return table


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _counts(counts: Mapping[str, int]) -> str:
    """Made ``visible``: the names are reasons and outcomes read from headers and rows."""
    return ", ".join(f"{visible(k)} {v}" for k, v in sorted(counts.items())) or "none"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def replay_report(summary: ReplaySummary) -> list[RenderableType]:
    """``replay``: the offsets read per partition, the records by outcome, the sessions written, the outbox rows
    published or left to the relay, the time taken."""
    mode = (" (dry run: nothing was written, sent or committed)", "bold") if summary.dry_run else ""
    lines: list[RenderableType] = [line("replay of ", summary.topic, " as group ", summary.group_id, mode)]
    table = _table("partition", "from", "to", "records", "", box=None, pad_edge=False)
    idle = finished = 0
    for p, span in sorted(summary.spans.items()):
        if span.size == 0:
            idle += 1
            finished += span.resumed
            continue
        table.add_row(str(p), str(span.start), str(span.stop), str(span.size), "resumed" if span.resumed else "")
    if table.row_count:
        lines.append(table)
    if idle:
        lines.append(line(f"{idle} partition(s) with nothing to replay"))
    if finished:
        # A trap for a rebuild into a new database: the group's own offsets say it is done, so nothing is read.
        lines.append(
            line(
                f"{finished} of them: group ",
                summary.group_id,
                " had committed up to their end already (it resumes "
                "where it stopped); to read them again, as a rebuild into a new database must, use a new --group",
            )
        )
    t = summary.totals
    verb = "would be" if summary.dry_run else "were"
    lines.append(
        Text(
            f"records {t.records}: applied {t.applied}, duplicates {t.duplicates}, ignored {t.ignored}, "
            f"dead letters {sum(t.dead_lettered.values())} ({_counts({str(k): v for k, v in t.dead_lettered.items()})})"
        )
    )
    sessions = f"sessions created {t.sessions_created}, sessions updated {t.sessions_updated}"
    if cancelled := t.sessions_cancelled + t.cancelled_unannounced:
        sessions += f", sessions cancelled {cancelled} ({t.cancelled_unannounced} never announced)"
    lines.append(Text(f"{sessions} ({verb} written)"))
    if summary.published is not None:
        lines.append(line(f"outbox rows published now: {summary.published}"))
    if summary.backlog:
        lines.append(
            line(
                f"outbox rows waiting for the relay: {summary.backlog} (the running service sends them; "
                "or run again with --relay)"
            )
        )
    lines.append(line(f"took {summary.elapsed_s:.1f} s"))
    return lines


def status_report(status: Status) -> list[RenderableType]:
    """``status``: the lag per partition as a table, then the totals, the outbox backlog, the DLQ and the inbox."""
    table = _table("partition", "committed", "end", "lag")
    for p in status.partitions:
        table.add_row(str(p.partition), "-" if p.committed is None else str(p.committed), str(p.end), str(p.lag))
    table.add_section()
    table.add_row("total", "", "", str(status.lag))
    return [
        line(status.input_topic, " as group ", status.group_id),
        table,
        line(f"outbox backlog: {status.outbox_backlog} rows, oldest {_age(status.outbox_oldest_age_s)}"),
        line(f"dead letters: {status.dlq_size} in ", status.dlq_topic),
        Text(f"inbox: {status.inbox_size} rows ({_counts(status.inbox)})"),
        Text(f"live sessions: {sum(status.sessions.values())} ({_counts(status.sessions)})"),
    ]


def dead_letter_table(letters: Sequence[DeadLetter]) -> Table:
    """One row per dead letter: position, reason, error, source coordinates, key, time (untrusted text made safe)."""
    table = _table("dlq", "reason", "error", "source", "key", "failed at")
    for letter in letters:
        table.add_row(
            letter.position,
            _short(letter.reason, 40),
            _short(letter.error, 80),
            _short(letter.source, 80),
            _short(letter.key_text, 40),
            _when(letter.failed_at),
        )
    return table


def dlq_list_report(result: Scan, reasons: Mapping[str, int]) -> list[RenderableType]:
    """``dlq list``: the table of the matched letters, then the counts scanned and matched and by reason."""
    lines: list[RenderableType] = []
    if result.letters:
        lines.append(dead_letter_table(result.letters))
    shown = len(result.letters)
    more = f", showing the newest {shown} (--limit)" if shown < result.matched else ""
    lines.append(Text(f"{result.matched} of {result.scanned} dead letters match{more}; by reason: {_counts(reasons)}"))
    return lines


def dlq_replay_report(steps: Sequence[Step], outcome: ReplayOutcome | None, input_topic: str) -> list[RenderableType]:
    """``dlq replay``: each letter's step (replay or skip, and why), then what was published (``outcome`` None: a dry
    run)."""
    table = _table("dlq", "reason", "key", "message id", "action", "why")
    for step in steps[:ROWS_SHOWN]:
        letter = step.letter
        table.add_row(
            letter.position, _short(letter.reason, 40), _short(letter.key_text, 30),
            str(letter.message_id or "-"), cell(step.action), cell(step.note),
        )  # fmt: skip
    lines: list[RenderableType] = [table] if steps else []
    if len(steps) > ROWS_SHOWN:
        lines.append(line(f"... and {len(steps) - ROWS_SHOWN} more"))
    chosen = sum(1 for s in steps if s.action == "replay")
    resets = sum(1 for s in steps if s.reset_inbox)
    if outcome is None:
        lines.append(
            line(
                f"dry run: would replay {chosen} to ", input_topic,
                f" (resetting {resets} dead_lettered inbox rows), skip {len(steps) - chosen}",
            )
        )  # fmt: skip
    else:
        lines.append(
            line(
                f"replayed {outcome.published} to ", input_topic,
                f" (reset {outcome.inbox_rows_reset} dead_lettered inbox rows), skipped {outcome.skipped}",
            )
        )  # fmt: skip
    return lines


def republish_report(rows: Sequence[OutboxRow], result: Republished | None) -> list[RenderableType]:
    """``outbox republish``: the chosen rows, then how many were queued and sent (``result`` None: a dry run)."""
    table = _table("id", "message id", "type", "booking", "created at", "published at", "chosen")
    for row in rows[:ROWS_SHOWN]:
        table.add_row(
            str(row.id), str(row.message_id), cell(row.type), _short(row.booking_id, 40), _when(row.created_at),
            _when(row.published_at), "match" if row.chosen else "later row",
        )  # fmt: skip
    lines: list[RenderableType] = [table] if rows else []
    if len(rows) > ROWS_SHOWN:
        lines.append(line(f"... and {len(rows) - ROWS_SHOWN} more"))
    later = sum(1 for r in rows if not r.chosen)
    chosen = f"{len(rows) - later} rows chosen" + (f" + {later} later rows of the same bookings" if later else "")
    if result is None:
        lines.append(line(f"dry run: {chosen}; nothing changed"))
    elif result.published is None:
        lines.append(
            line(
                f"{chosen}: {result.queued} handed back to the outbox relay; the running service re-sends them "
                "with their original message ids (or run again with --relay)"
            )
        )
    else:
        lines.append(
            line(f"{chosen}: {result.queued} handed back to the relay; {result.published} published from here")
        )
    return lines


def prune_report(result: PruneResult) -> list[RenderableType]:
    """``inbox prune`` / ``outbox prune``: the cutoff, the rows older than it, and what was deleted (or, in a dry run,
    would be)."""
    what, cutoff, oldest = result.target.what, _when(result.cutoff), _when(result.oldest)
    older = f"{result.candidates} {what} before {cutoff} (oldest {oldest})"
    if result.dry_run:
        return [line(f"dry run: would delete {older}")]
    return [line(f"deleted {result.deleted} of {older}, in {result.batches} batch(es)")]


def _short(text: str, width: int) -> Text:
    """One cell of untrusted text: whitespace runs as one space, controls written out, cut to ``width``."""
    flat = visible(" ".join(text.split()))
    return cell(flat if len(flat) <= width else flat[: width - 3] + "...")
