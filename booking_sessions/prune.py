"""Prune the inbox: delete rows processed before a cutoff, in bounded batches, each its own short transaction.

Safe at any time, also while the service runs: the rows are old, each batch locks only the rows it deletes
(``SKIP LOCKED``: it never waits for the consumer, and the consumer never waits long for it), and the session
rows keep their snapshot version, so a redelivered pruned event still cannot overwrite a newer snapshot
(CONTRACT: "also after the inbox has been pruned"). What a pruned id loses is only the duplicate check itself: a
redelivered copy is decided again, and changes nothing because the version guard and the upserts hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rich.progress import Progress
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.arguments import ArgumentError
from booking_sessions.failures import check_database
from booking_sessions.service import create_engine
from booking_sessions.settings import Settings

# Below an hour a typo (``--older-than 30m`` for 30 days) would empty the inbox while redeliveries of the
# last rebalance may still be on their way.
MIN_AGE = timedelta(hours=1)
DEFAULT_BATCH_ROWS = 5000

_CUTOFF = text("SELECT now() - CAST(:age AS interval)")
_CANDIDATES = text("SELECT count(*) AS n, min(processed_at) AS oldest FROM inbox_messages WHERE processed_at < :cutoff")
_DELETE_BATCH = text(
    """
    WITH doomed AS (
        SELECT message_id FROM inbox_messages
        WHERE processed_at < :cutoff
        ORDER BY processed_at
        LIMIT :batch_rows
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM inbox_messages i USING doomed d WHERE i.message_id = d.message_id
    """
)


@dataclass(frozen=True, slots=True)
class PruneResult:
    cutoff: datetime
    candidates: int  # rows older than the cutoff when the prune began
    oldest: datetime | None
    deleted: int
    batches: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "candidates": self.candidates,
            "oldest": None if self.oldest is None else self.oldest.isoformat(),
            "deleted": self.deleted,
            "batches": self.batches,
            "dry_run": self.dry_run,
        }


def check_age(older_than: timedelta) -> None:
    if older_than < MIN_AGE:
        raise ArgumentError("--older-than must be at least 1h: the inbox is the duplicate check of recent redeliveries")


async def prune_inbox(
    engine: AsyncEngine, older_than: timedelta, *, batch_rows: int, dry_run: bool, progress: Progress
) -> PruneResult:
    check_age(older_than)
    if batch_rows < 1:
        raise ArgumentError("--batch-rows must be at least 1")
    async with engine.connect() as conn:
        # The database's clock, not this machine's: processed_at was stamped by it.
        cutoff: datetime = await conn.scalar(_CUTOFF, {"age": older_than})
        found = (await conn.execute(_CANDIDATES, {"cutoff": cutoff})).one()
    deleted = batches = 0
    if not dry_run and found.n:
        task = progress.add_task("pruning the inbox", total=found.n)
        while True:
            async with engine.begin() as conn:
                # Bounded waits: a batch that cannot get a lock or takes too long fails alone, nothing held.
                await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                await conn.execute(text("SET LOCAL statement_timeout = '60s'"))
                result = await conn.execute(_DELETE_BATCH, {"cutoff": cutoff, "batch_rows": batch_rows})
            batches += 1
            deleted += result.rowcount
            progress.update(task, completed=min(deleted, found.n))
            if result.rowcount < batch_rows:
                break
    return PruneResult(cutoff, found.n, found.oldest, deleted, batches, dry_run)


async def prune(
    settings: Settings, older_than: timedelta, *, batch_rows: int, dry_run: bool, progress: Progress
) -> PruneResult:
    engine = create_engine(settings)
    try:
        await check_database(engine, settings.database_url_value())
        return await prune_inbox(engine, older_than, batch_rows=batch_rows, dry_run=dry_run, progress=progress)
    finally:
        await engine.dispose()
