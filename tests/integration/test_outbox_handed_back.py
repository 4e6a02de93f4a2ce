"""An outbox row handed back by `outbox republish` waits from its hand-back, not from its creation: rows handed back
after days read days old at once in the oldest-unpublished age (`status`, the gauge), and BookingSessionsOutboxOld
fired on every republish of old rows (a newcomer's find). Migration 0007 adds the column, expand-only."""

from __future__ import annotations

import uuid

from booking_sessions.observe.metrics import Metrics
from booking_sessions.observe.sampler import Sampler
from booking_sessions.service import create_engine
from booking_sessions.settings import Settings
from tests.integration.alembic_steps import PREVIOUS_RELEASE_OUTBOX, alembic, version
from tests.integration.harness import execute, query
from tests.integration.operator_cli import invoke, invoke_json

_OLD_PUBLISHED_ROW = """
    INSERT INTO outbox_messages (message_id, topic, key, payload, created_at, published_at)
    VALUES (:mid, 'session.events', 'bk_old', '{"type": "SessionCreated"}', now() - interval '2 days',
            now() - interval '2 days')
"""


async def test_a_row_handed_back_waits_from_its_hand_back(settings: Settings, database_url: str) -> None:
    await execute(database_url, _OLD_PUBLISHED_ROW, mid=uuid.uuid4())

    handed_back = await invoke(settings, "outbox", "republish", "--booking", "bk_old")  # no relay runs here

    assert handed_back.exit_code == 0, handed_back.output
    status = await invoke_json(settings, "status")
    assert status["outbox_backlog"] == 1
    assert status["outbox_oldest_age_s"] < 3600  # before: 172,800 s, its creation two days ago
    metrics = Metrics()
    engine = create_engine(settings)
    try:
        await Sampler(None, engine, metrics, interval_s=1).sample_outbox()
    finally:
        await engine.dispose()
    age = metrics.registry.get_sample_value("booking_sessions_outbox_oldest_unpublished_age_seconds")
    assert age is not None and age < 3600


async def test_migration_0007_is_expand_only_and_downgrades_keeping_rows(settings: Settings, database_url: str) -> None:
    url = database_url
    await alembic(url, "downgrade", "0006")
    await execute(url, PREVIOUS_RELEASE_OUTBOX, mid=uuid.uuid4(), topic=settings.output_topic, key="bk_before", p="{}")
    await alembic(url, "upgrade", "0007")
    assert await version(url) == "0007"
    # The previous release, still running during a deploy, writes rows without the column: never handed back.
    await execute(url, PREVIOUS_RELEASE_OUTBOX, mid=uuid.uuid4(), topic=settings.output_topic, key="bk_during", p="{}")
    assert await query(url, "SELECT key, handed_back_at FROM outbox_messages ORDER BY id") == [
        {"key": "bk_before", "handed_back_at": None},
        {"key": "bk_during", "handed_back_at": None},
    ]
    await alembic(url, "downgrade", "0006")
    assert len(await query(url, "SELECT id FROM outbox_messages")) == 2
    await alembic(url, "upgrade", "head")
