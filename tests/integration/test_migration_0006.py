"""Migration 0006 (instants beyond the microsecond) on a database that holds sessions: expand-only, so the previous
release's session writes go on during a rolling deploy (its rows get '' for the new columns: no digits, which is
what they had); the downgrade drops the two columns and keeps the rows."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from tests.integration.alembic_steps import alembic, version
from tests.integration.harness import execute, query

COLUMNS = {"snapshot_occurred_at_beyond_us", "cancelled_at_beyond_us"}

# The session insert of the release before 0006 (consumer/store.py then), for one row.
PREVIOUS_RELEASE_SESSION = (
    "INSERT INTO live_sessions (id, booking_request_id, instructor_id, student_id, scheduled_start,"
    " duration_minutes, meeting_link, snapshot_occurred_at, snapshot_message_id)"
    " VALUES (:id, :booking, 'u_7', 'u_42', '2026-12-01T15:00:00Z', 60, 'https://meet.jit.si/x',"
    " '2026-11-24T10:00:00Z', :mid)"
)


async def columns(url: str) -> set[str]:
    rows = await query(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'live_sessions'")
    return {r["column_name"] for r in rows} & COLUMNS


async def insert_previous_release_session(url: str, booking: str) -> None:
    await execute(url, PREVIOUS_RELEASE_SESSION, id=uuid.uuid4(), booking=booking, mid=uuid.uuid4())


async def test_previous_release_sessions_get_no_digits_and_downgrade_keeps_rows(database_url: str) -> None:
    url = database_url
    await alembic(url, "downgrade", "0005")
    assert await columns(url) == set()
    await insert_previous_release_session(url, "bk_old")

    await alembic(url, "upgrade", "0006")

    assert await version(url) == "0006"
    assert await columns(url) == COLUMNS
    await insert_previous_release_session(url, "bk_during")  # the previous release, still running
    rows = await query(
        url, "SELECT snapshot_occurred_at_beyond_us AS s, cancelled_at_beyond_us AS c FROM live_sessions"
    )
    assert rows == [{"s": "", "c": ""}] * 2
    # Only digits, none of them a trailing "0": the text orders as the instants do.
    with pytest.raises(IntegrityError, match="ck_live_sessions_snapshot_occurred_at_beyond_us"):
        await execute(url, "UPDATE live_sessions SET snapshot_occurred_at_beyond_us = '40'")

    await alembic(url, "downgrade", "0005")

    assert await version(url) == "0005"
    assert await columns(url) == set()
    assert len(await query(url, "SELECT id FROM live_sessions")) == 2
    await alembic(url, "upgrade", "head")
