"""Migration 0005 (relay shards) on a database that holds rows: expand-only, so the previous release keeps writing
and relaying during a rolling deploy, never beside a sharded relay step; the downgrade drops the function and the
index and keeps the rows; a build that failed halfway is mended by running it again."""

from __future__ import annotations

import asyncio
import importlib
import uuid

import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.settings import Settings
from producer.relay import RELAY_LOCK, OutboxRelay
from tests.integration.alembic_steps import PREVIOUS_RELEASE_OUTBOX, alembic, version
from tests.integration.harness import execute, query
from tests.integration.relay_checks import HeldPublisher, check_output, publisher_and_engines

# The previous release's relay step (producer/relay.py before 0005): one lock for the database, rows in id order.
PREVIOUS_RELEASE_LOCK = "SELECT pg_try_advisory_xact_lock(:k)"
PREVIOUS_RELEASE_ROWS = "SELECT id FROM outbox_messages WHERE published_at IS NULL ORDER BY id LIMIT 1000"


async def schema(url: str) -> dict[str, object]:
    [row] = await query(
        url,
        "SELECT to_regproc('outbox_shard') IS NOT NULL AS function,"
        " (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('ix_outbox_messages_shard_unpublished'))"
        " AS index_valid",
    )
    return row


async def test_previous_release_keeps_going_and_never_relays_beside_a_sharded_step(
    settings: Settings, database_url: str
) -> None:
    url, topic = database_url, settings.output_topic
    await alembic(url, "downgrade", "0004")
    assert await schema(url) == {"function": False, "index_valid": None}
    for name in ("bk_a", "bk_b"):
        await execute(url, PREVIOUS_RELEASE_OUTBOX, mid=uuid.uuid4(), topic=topic, key=name, p="{}")

    await alembic(url, "upgrade", "0005")

    assert await version(url) == "0005"
    assert await schema(url) == {"function": True, "index_valid": True}  # built CONCURRENTLY over existing rows
    await execute(url, PREVIOUS_RELEASE_OUTBOX, mid=uuid.uuid4(), topic=topic, key="bk_a", p="{}")  # still writes
    async with publisher_and_engines(settings, 2) as (publisher, (engine, old_release)):
        held = HeldPublisher(publisher)
        step = asyncio.create_task(OutboxRelay(engine, held, batch_rows=1000).run_once())
        await asyncio.wait_for(held.entered.wait(), timeout=20)
        async with old_release.begin() as conn:  # the previous release's relay, mid-deploy: not now
            assert await conn.scalar(text(PREVIOUS_RELEASE_LOCK), {"k": RELAY_LOCK}) is False
        held.release.set()
        assert await asyncio.wait_for(step, timeout=30) == 3
        async with old_release.begin() as conn:  # between steps it may lead, and finds nothing left
            assert await conn.scalar(text(PREVIOUS_RELEASE_LOCK), {"k": RELAY_LOCK}) is True
            assert (await conn.execute(text(PREVIOUS_RELEASE_ROWS))).all() == []
    assert (await check_output(settings, url))["unpublished"] == 0

    await alembic(url, "downgrade", "0004")

    assert await version(url) == "0004"
    assert await schema(url) == {"function": False, "index_valid": None}
    assert len(await query(url, "SELECT id FROM outbox_messages")) == 3
    await alembic(url, "upgrade", "head")


# The function and the index build of 0005 exactly as its upgrade runs them, run here by hand to make the build fail.
MIGRATION_0005 = importlib.import_module("migrations.versions.0005_outbox_relay_shards")


async def test_migrate_again_mends_an_index_build_that_failed_halfway(settings: Settings, database_url: str) -> None:
    url = database_url
    await alembic(url, "downgrade", "0004")
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as writer, engine.connect() as builder:
            # A writer's transaction left open on the outbox: the build, once it has created its index (invalid
            # until the end), waits for it, and gives up at lock_timeout. So ends a build cancelled by an operator,
            # a deploy's deadline or a restart: the index stays, invalid, and the revision is not recorded.
            await writer.begin()
            await writer.execute(
                text(PREVIOUS_RELEASE_OUTBOX), {"mid": uuid.uuid4(), "topic": "t", "key": "k", "p": "{}"}
            )
            autocommit = await builder.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text(MIGRATION_0005._FUNCTION))
            await autocommit.execute(text("SET lock_timeout = '200ms'"))
            with pytest.raises(DBAPIError, match="lock timeout"):
                await autocommit.execute(text(MIGRATION_0005._INDEX))
            await writer.rollback()
    finally:
        await engine.dispose()
    assert await version(url) == "0004"
    assert await schema(url) == {"function": True, "index_valid": False}

    await alembic(url, "upgrade", "0005")  # what the operator runs again: nothing by hand

    assert await version(url) == "0005"
    assert await schema(url) == {"function": True, "index_valid": True}
    indexes = await query(url, "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_outbox_messages_shard%'")
    assert indexes == [{"indexname": "ix_outbox_messages_shard_unpublished"}]
