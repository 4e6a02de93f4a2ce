"""``inbox prune`` and ``outbox prune``: an operator's prune of one table, batch after batch, with a dry run and
progress. The statements, and what pruning means for a redelivery, are in ``booking_sessions/retention.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rich.progress import Progress
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.ops.arguments import ArgumentError
from booking_sessions.ops.failures import changes_begin, check_database
from booking_sessions.retention import TARGETS, PruneTarget, TableName, cutoff_for, delete_batch
from booking_sessions.service import create_engine
from booking_sessions.settings import Settings

# Below an hour a typo (``--older-than 30m`` for 30 days) would empty the inbox while redeliveries of the
# last rebalance may still be on their way.
MIN_AGE = timedelta(hours=1)
DEFAULT_BATCH_ROWS = 5000


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one prune did: ``candidates`` rows were older than ``cutoff`` when it began."""

    target: PruneTarget
    cutoff: datetime
    candidates: int
    oldest: datetime | None
    deleted: int
    batches: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings, ``oldest`` None when no row was old enough."""
        return {
            "table": self.target.name,
            "cutoff": self.cutoff.isoformat(),
            "candidates": self.candidates,
            "oldest": None if self.oldest is None else self.oldest.isoformat(),
            "deleted": self.deleted,
            "batches": self.batches,
            "dry_run": self.dry_run,
        }


def check_age(older_than: timedelta) -> None:
    """Raises ArgumentError below ``MIN_AGE``."""
    if older_than < MIN_AGE:
        raise ArgumentError("--older-than must be at least 1h: the inbox is the duplicate check of recent redeliveries")


async def prune_table(
    engine: AsyncEngine,
    target: PruneTarget,
    older_than: timedelta,
    *,
    batch_rows: int,
    dry_run: bool,
    progress: Progress,
) -> PruneResult:
    """The whole prune of one table, batch after batch until fewer than ``batch_rows`` are left to delete.

    Raises ArgumentError for an age under ``MIN_AGE`` or ``batch_rows`` < 1."""
    check_age(older_than)
    if batch_rows < 1:
        raise ArgumentError("--batch-rows must be at least 1")
    cutoff = await cutoff_for(engine, older_than)
    async with engine.connect() as conn:
        found = (await conn.execute(target.candidates, {"cutoff": cutoff})).one()
    deleted = batches = 0
    if not dry_run and found.n:
        task = progress.add_task(f"pruning the {target.name}", total=found.n)
        changes_begin()
        while True:
            async with engine.begin() as conn:
                count = await delete_batch(conn, target, cutoff, batch_rows)
            batches += 1
            deleted += count
            progress.update(task, completed=min(deleted, found.n))
            if count < batch_rows:
                break
    return PruneResult(target, cutoff, found.n, found.oldest, deleted, batches, dry_run)


async def prune(
    settings: Settings,
    table: TableName,
    older_than: timedelta,
    *,
    batch_rows: int,
    dry_run: bool,
    progress: Progress,
) -> PruneResult:
    """``inbox prune`` / ``outbox prune``: its own engine, checked first so a bad URL is one readable line.

    Raises OperatorError when the database cannot be reached or is not migrated, ArgumentError as
    ``prune_table``."""
    engine = create_engine(settings)
    try:
        await check_database(engine, settings.database_url_value())
        return await prune_table(
            engine, TARGETS[table], older_than, batch_rows=batch_rows, dry_run=dry_run, progress=progress
        )
    finally:
        await engine.dispose()
