"""The options several operators' commands share, as typer annotations (one help text each)."""

from __future__ import annotations

from typing import Annotated

import typer

from booking_sessions.settings_checks import MAX_ROWS

Since = Annotated[
    str | None,
    typer.Option(help="From this time: 2026-11-01T00:00Z, 2026-11-01 (midnight UTC) or a duration ago (6h, 30d)."),
]
Until = Annotated[str | None, typer.Option(help="Before this time (same forms as --since).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change and send nothing.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
OlderThan = Annotated[str, typer.Option(help="Delete rows older than this: 30d, 12h, 2w (at least 1h).")]
# Bounded like the BOOKING_*_BATCH_ROWS settings: 10**20 would pass min=1 and then overflow PostgreSQL's bigint.
BatchRows = Annotated[int, typer.Option(help=f"Rows per transaction (1 to {MAX_ROWS}).", min=1, max=MAX_ROWS)]
