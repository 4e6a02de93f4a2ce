"""Retention: which inbox and outbox rows are old (fixed SQL), how one bounded batch of them is deleted, and the
loop that ``run`` keeps: inbox rows older than ``BOOKING_INBOX_RETENTION`` and published outbox rows older than
``BOOKING_OUTBOX_RETENTION``, deleted in bounded batches by one instance at a time. ``inbox prune`` and
``outbox prune`` (``booking_sessions/ops/prune.py``) delete with the same statements.

Safe at any time, also while the service runs: each batch is one short transaction that locks only the rows it
deletes (``SKIP LOCKED``: it never waits for the consumer, and the consumer never waits long for it).
- Inbox: the session rows keep their snapshot version, so a redelivered pruned event still cannot overwrite a
  newer snapshot (CONTRACT: "also after the inbox has been pruned"). What a pruned id loses is only the duplicate
  check itself: a redelivered copy is decided again and changes nothing, because the version guard and the
  upserts hold; but a *different* payload under a pruned id is no longer caught as ``message_id_conflict``.
- Outbox: only rows the relay has published (``published_at`` set); an unpublished row is never deleted. A pruned
  row can no longer be re-sent by ``outbox republish``.

Housekeeping never stops the service: a failed round is logged, counted as a retry and tried again at the next
interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.faults import error_fields

log = structlog.get_logger(__name__)

# pg_try_advisory_xact_lock key of the retention batches, apart from the relay's: one instance prunes at a time,
# the others find the lock taken and skip the round (deleting the same rows twice would only cost lock waits).
RETENTION_LOCK = 0x626B5F7265746E  # "bk_retn"

_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")

TableName = Literal["inbox", "outbox"]


@dataclass(frozen=True, slots=True)
class PruneTarget:
    """One prunable table: what counts as old, as fixed SQL (no operator text ever reaches it)."""

    name: TableName
    what: str  # for reports: "inbox rows processed", "published outbox rows"
    candidates: TextClause  # -> n, oldest; binds :cutoff
    delete_batch: TextClause  # binds :cutoff, :batch_rows


INBOX = PruneTarget(
    "inbox",
    "inbox rows processed",
    text("SELECT count(*) AS n, min(processed_at) AS oldest FROM inbox_messages WHERE processed_at < :cutoff"),
    text(
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
    ),
)

OUTBOX = PruneTarget(
    "outbox",
    "published outbox rows",
    text(
        "SELECT count(*) AS n, min(published_at) AS oldest FROM outbox_messages "
        "WHERE published_at IS NOT NULL AND published_at < :cutoff"
    ),
    text(
        """
        WITH doomed AS (
            SELECT id FROM outbox_messages
            WHERE published_at IS NOT NULL AND published_at < :cutoff
            ORDER BY id
            LIMIT :batch_rows
            FOR UPDATE SKIP LOCKED
        )
        DELETE FROM outbox_messages o USING doomed d WHERE o.id = d.id
        """
    ),
)

TARGETS: dict[TableName, PruneTarget] = {"inbox": INBOX, "outbox": OUTBOX}

_CUTOFF = text("SELECT now() - CAST(:age AS interval)")

# For the batch's transaction only (is_local), in one round trip: the bounded waits, and a plan made for each batch.
# A delete batch runs a few times an hour; a plan PostgreSQL kept for it from small tables (after five runs on a
# connection) would hash the batch and read the whole table for every batch, until an ANALYZE replaced it
# (consumer/store.py, above _INSERT_INBOX). Planning each batch anew costs well under a millisecond.
_BATCH_SETTINGS = text(
    "SELECT set_config('lock_timeout', '5s', true), set_config('statement_timeout', '60s', true),"
    " set_config('plan_cache_mode', 'force_custom_plan', true)"
)


async def cutoff_for(engine: AsyncEngine, older_than: timedelta) -> datetime:
    """``now() - older_than`` by the database's clock, not this machine's: the rows were stamped by it. Returns an
    aware datetime; raises what the database raises."""
    async with engine.connect() as conn:
        found: datetime = await conn.scalar(_CUTOFF, {"age": older_than})
    return found


async def delete_batch(conn: AsyncConnection, target: PruneTarget, cutoff: datetime, batch_rows: int) -> int:
    """Delete at most ``batch_rows`` rows of ``target`` older than ``cutoff`` in the caller's transaction (keep it
    short: one batch each); return how many went. Bounded waits: a batch that cannot get a lock (5 s) or takes too
    long (60 s) fails alone, nothing held: raises the database's error (DBAPIError) then."""
    await conn.execute(_BATCH_SETTINGS)
    result = await conn.execute(target.delete_batch, {"cutoff": cutoff, "batch_rows": batch_rows})
    return int(result.rowcount)


class RetentionObserver(Protocol):
    """What retention reports for metrics (booking_sessions.observe.metrics.Metrics implements it)."""

    def retention_deleted(self, table: str, rows: int) -> None:
        """A batch deleted ``rows`` (> 0) rows of ``table`` (``inbox`` or ``outbox``)."""

    def retention_retried(self, error: BaseException) -> None:
        """A round failed with ``error``; the next interval tries again."""


class Retention:
    """Keeps each table within its retention (``inbox``, ``outbox``: ages; ``None`` turns a table's pruning off),
    a round every ``interval_s`` seconds, ``batch_rows`` rows per transaction."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        inbox: timedelta | None,
        outbox: timedelta | None,
        interval_s: float,
        batch_rows: int,
        observer: RetentionObserver | None = None,
    ) -> None:
        self._engine = engine
        self._plan: list[tuple[PruneTarget, timedelta]] = [
            (target, age) for target, age in ((INBOX, inbox), (OUTBOX, outbox)) if age is not None
        ]
        self._interval_s = interval_s
        self._batch_rows = batch_rows
        self._observer = observer

    async def run_once(self, stop: asyncio.Event | None = None) -> dict[str, int | None]:
        """One round: each table's old rows, batch after batch until a batch is not full (or ``stop`` is set).

        Returns rows deleted per table name; ``None`` for a table when another instance held the retention lock.
        Raises what the database raised (the caller retries at the next interval).
        """
        deleted: dict[str, int | None] = {}
        for target, age in self._plan:
            cutoff = await cutoff_for(self._engine, age)
            total: int | None = 0
            while stop is None or not stop.is_set():
                async with self._engine.begin() as conn:
                    if not await conn.scalar(_TRY_LOCK, {"key": RETENTION_LOCK}):
                        total = None  # another instance prunes now
                        break
                    count = await delete_batch(conn, target, cutoff, self._batch_rows)
                total = (total or 0) + count
                if self._observer is not None and count:
                    self._observer.retention_deleted(target.name, count)
                if count < self._batch_rows:
                    break
            deleted[target.name] = total
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a round now, then one every ``interval_s``. Never raises (housekeeping must not end
        ``run``); a failed round is logged and counted, and the next one tries again."""
        if not self._plan:
            return
        while not stop.is_set():
            try:
                deleted = await self.run_once(stop)
            except Exception as error:  # any error: the service goes on, the next round retries
                if self._observer is not None:
                    self._observer.retention_retried(error)
                log.warning("retention_failed", cause=type(error).__name__, **error_fields(error))
            else:
                if any(deleted.values()):
                    log.info("retention_pruned", **{f"{name}_rows": n for name, n in deleted.items()})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
