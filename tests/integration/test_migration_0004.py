"""Migration 0004 (the outbox rows' trace context) on a database that holds rows: expand-only, so the previous
release keeps writing outbox rows during a rolling deploy and the new relay sends them without a traceparent; the
downgrade drops the two columns and keeps the rows."""

from __future__ import annotations

import uuid

from booking_sessions.settings import Settings
from tests.integration.alembic_steps import PREVIOUS_RELEASE_OUTBOX, alembic, version
from tests.integration.harness import execute, query, read_json, relay_of_the_running_service

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def columns(url: str) -> set[str]:
    rows = await query(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox_messages'")
    return {r["column_name"] for r in rows}


async def test_previous_release_rows_relay_without_a_traceparent_and_downgrade_keeps_rows(
    settings: Settings, database_url: str
) -> None:
    url = database_url
    await alembic(url, "downgrade", "0003")
    assert not await columns(url) & {"traceparent", "tracestate"}
    await execute(url, PREVIOUS_RELEASE_OUTBOX, mid=uuid.uuid4(), topic=settings.output_topic, key="bk_old", p="{}")

    await alembic(url, "upgrade", "0004")

    assert await version(url) == "0004"
    assert await columns(url) >= {"traceparent", "tracestate"}
    # The previous release, still running, writes as before; the new one writes a row with its cause's context.
    await execute(url, PREVIOUS_RELEASE_OUTBOX, mid=uuid.uuid4(), topic=settings.output_topic, key="bk_during", p="{}")
    await execute(
        url,
        "INSERT INTO outbox_messages (message_id, topic, key, payload, traceparent)"
        " VALUES (:mid, :t, 'bk_new', '{}', :tp)",
        mid=uuid.uuid4(),
        t=settings.output_topic,
        tp=TRACEPARENT,
    )
    await alembic(url, "upgrade", "head")  # this release's relay needs 0005 (its shards); migrate runs first
    assert await relay_of_the_running_service(settings, url) == 3
    records = {r["key"]: r for r in await read_json(settings, settings.output_topic, 3)}
    assert [name for name, _ in records[b"bk_old"]["headers"]] == ["message_id"]
    assert [name for name, _ in records[b"bk_during"]["headers"]] == ["message_id"]
    # No tracing configured in this process: the stored context is passed on as it is.
    assert dict(records[b"bk_new"]["headers"])["traceparent"] == TRACEPARENT.encode()

    await alembic(url, "downgrade", "0003")

    assert await version(url) == "0003"
    assert not await columns(url) & {"traceparent", "tracestate"}
    assert len(await query(url, "SELECT id FROM outbox_messages")) == 3
    await alembic(url, "upgrade", "head")
