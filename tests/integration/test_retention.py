"""Retention that runs itself: `run` deletes old inbox rows and old published outbox rows in bounded batches, one
instance at a time; `outbox prune` does the same by hand; unpublished outbox rows are never deleted."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.retention import RETENTION_LOCK, Retention
from booking_sessions.service import run_until
from booking_sessions.settings import Settings
from tests.integration.bookings import event
from tests.integration.harness import Produced, consume_all, execute, query, service
from tests.integration.operator_cli import invoke, publish_one_by_one
from tests.waiting import eventually


class Deleted:
    """A RetentionObserver that remembers every batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.errors: list[BaseException] = []

    def retention_deleted(self, table: str, rows: int) -> None:
        self.batches.append((table, rows))

    def retention_retried(self, error: BaseException) -> None:
        self.errors.append(error)


async def counts(database_url: str) -> dict[str, int]:
    [row] = await query(
        database_url,
        "SELECT (SELECT count(*) FROM inbox_messages) AS inbox,"
        " (SELECT count(*) FROM outbox_messages WHERE published_at IS NOT NULL) AS published,"
        " (SELECT count(*) FROM outbox_messages WHERE published_at IS NULL) AS unpublished",
    )
    return {k: int(v) for k, v in row.items()}


async def ten_bookings_published(settings: Settings, database_url: str) -> None:
    """Ten approvals applied and their SessionCreated published: 10 inbox rows, 10 published outbox rows."""
    produced = Produced()
    await publish_one_by_one(settings, [event("BookingApproved", f"bk_{i}", 0) for i in range(10)], produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()
    assert await counts(database_url) == {"inbox": 10, "published": 10, "unpublished": 0}


AGE_SEVEN_OLD = [
    "UPDATE inbox_messages SET processed_at = now() - interval '40 days' WHERE booking_id < 'bk_7'",
    "UPDATE outbox_messages SET published_at = now() - interval '10 days' WHERE key < 'bk_7'",
    # An old row the relay never published (a broker refusing for days): it must survive any retention.
    "UPDATE outbox_messages SET published_at = NULL, created_at = now() - interval '10 days' WHERE key = 'bk_0'",
]


async def age(database_url: str) -> None:
    for statement in AGE_SEVEN_OLD:
        await execute(database_url, statement)


async def test_retention_deletes_old_rows_in_bounded_batches_and_keeps_the_rest(
    settings: Settings, database_url: str
) -> None:
    await ten_bookings_published(settings, database_url)
    await age(database_url)
    async with service(settings) as svc:
        observer = Deleted()
        retention = Retention(
            svc.engine, inbox=timedelta(days=30), outbox=timedelta(days=7), interval_s=60, batch_rows=3,
            observer=observer,
        )  # fmt: skip
        assert await retention.run_once() == {"inbox": 7, "outbox": 6}
        assert await retention.run_once() == {"inbox": 0, "outbox": 0}
    assert observer.batches == [("inbox", 3), ("inbox", 3), ("inbox", 1), ("outbox", 3), ("outbox", 3)]
    assert observer.errors == []
    assert await counts(database_url) == {"inbox": 3, "published": 3, "unpublished": 1}
    kept = await query(database_url, "SELECT key FROM outbox_messages WHERE published_at IS NULL")
    assert kept == [{"key": "bk_0"}]


async def test_one_instance_at_a_time_the_other_skips_its_round(settings: Settings, database_url: str) -> None:
    await ten_bookings_published(settings, database_url)
    await age(database_url)
    holder = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with holder.connect() as other, service(settings) as svc:
            # Another instance in the middle of its round: it holds the retention lock.
            assert await other.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RETENTION_LOCK})
            retention = Retention(svc.engine, inbox=timedelta(days=30), outbox=None, interval_s=60, batch_rows=100)
            assert await retention.run_once() == {"inbox": None}
            assert await counts(database_url) == {"inbox": 10, "published": 9, "unpublished": 1}
            await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK})
            assert await retention.run_once() == {"inbox": 7}
    finally:
        await holder.dispose()


async def test_run_keeps_retention_by_itself_and_counts_it(settings: Settings, database_url: str) -> None:
    await ten_bookings_published(settings, database_url)
    await age(database_url)
    configured = settings.model_copy(
        update={"inbox_retention": timedelta(days=30), "outbox_retention": timedelta(days=7)}
    )
    stop = asyncio.Event()
    async with service(configured) as svc:
        task = asyncio.create_task(run_until(svc, stop))
        try:

            async def pruned() -> bool:
                now = await counts(database_url)
                # The relay publishes bk_0's old row meanwhile: published now, so too young to be pruned.
                assert now == {"inbox": 3, "published": 4, "unpublished": 0}, now
                return True

            await eventually(pruned, what="run's first retention round", timeout_s=30)
        finally:
            stop.set()
            await task
        registry = svc.metrics.registry
        deleted = {
            table: registry.get_sample_value("booking_sessions_retention_deleted_rows_total", {"table": table})
            for table in ("inbox", "outbox")
        }
    assert deleted == {"inbox": 7, "outbox": 6}


async def test_outbox_prune_by_hand_never_deletes_unpublished_rows(settings: Settings, database_url: str) -> None:
    await ten_bookings_published(settings, database_url)
    await age(database_url)

    dry = await invoke(settings, "outbox", "prune", "--older-than", "7d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: would delete 6 published outbox rows before" in dry.stdout
    done = await invoke(settings, "outbox", "prune", "--older-than", "7d", "--batch-rows", "4")
    assert done.exit_code == 0, done.output
    assert "deleted 6 of 6 published outbox rows before" in done.stdout and "in 2 batch(es)" in done.stdout
    assert await counts(database_url) == {"inbox": 10, "published": 3, "unpublished": 1}
