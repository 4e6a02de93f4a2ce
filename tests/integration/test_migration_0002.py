"""Migration 0002 (cancellation) on a database that holds rows: upgrade keeps them, the previous release keeps
working on the upgraded schema (expand-only), and downgrade refuses while anything is CANCELLED."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tests.conftest import migrated_database
from tests.integration.alembic_steps import alembic, version
from tests.integration.harness import execute, query
from tests.servers.ladder import PostgresHandle

T0 = datetime(2026, 11, 24, 10, tzinfo=UTC)

# The session upsert of the release before 0002 (consumer/store.py then), for one row: what a not yet upgraded
# instance keeps running during a rolling deploy.
PREVIOUS_RELEASE_UPSERT = """
    INSERT INTO live_sessions AS s
        (id, booking_request_id, instructor_id, student_id, title, scheduled_start, duration_minutes,
         status, meeting_link, snapshot_occurred_at, snapshot_message_id)
    VALUES (:id, :booking, 'u_7', 'u_42', :title, :start, 60, 'SCHEDULED', 'https://meet.jit.si/x', :at, :mid)
    ON CONFLICT (booking_request_id) DO UPDATE SET
        title = EXCLUDED.title,
        snapshot_occurred_at = EXCLUDED.snapshot_occurred_at,
        snapshot_message_id = EXCLUDED.snapshot_message_id,
        updated_at = now()
    WHERE (s.snapshot_occurred_at, s.snapshot_message_id)
        < (EXCLUDED.snapshot_occurred_at, EXCLUDED.snapshot_message_id)
"""


async def previous_release_writes(url: str, booking: str, minute: int, title: str) -> None:
    await execute(
        url,
        PREVIOUS_RELEASE_UPSERT,
        id=uuid.uuid5(uuid.NAMESPACE_URL, booking),
        booking=booking,
        title=title,
        start=T0,
        at=T0.replace(minute=minute),
        mid=uuid.uuid4(),
    )
    await execute(
        url,
        "INSERT INTO session_reservations (session_id, learner_id, status) VALUES (:id, 'u_42', 'CONFIRMED')"
        " ON CONFLICT DO NOTHING",
        id=uuid.uuid5(uuid.NAMESPACE_URL, booking),
    )


async def test_upgrade_keeps_rows_and_downgrade_refuses_cancelled_ones(
    postgres: PostgresHandle, template_database: str
) -> None:
    async with migrated_database(postgres, template_database) as url:
        await alembic(url, "downgrade", "0001")
        await previous_release_writes(url, "bk_old", 0, "Algebra")

        await alembic(url, "upgrade", "0002")

        assert await version(url) == "0002"
        [row] = await query(url, "SELECT status, title, cancelled_at, cancellation_reason FROM live_sessions")
        assert row == {"status": "SCHEDULED", "title": "Algebra", "cancelled_at": None, "cancellation_reason": None}
        # The previous release, still running, writes as before: new rows and newer snapshots.
        await previous_release_writes(url, "bk_old", 1, "Geometry")
        await previous_release_writes(url, "bk_during_deploy", 0, "Physics")
        rows = await query(url, "SELECT booking_request_id, title, status FROM live_sessions ORDER BY 1")
        assert rows == [
            {"booking_request_id": "bk_during_deploy", "title": "Physics", "status": "SCHEDULED"},
            {"booking_request_id": "bk_old", "title": "Geometry", "status": "SCHEDULED"},
        ]
        # The new release cancels one; the previous release's newer snapshot cannot reopen it.
        await execute(
            url,
            "UPDATE live_sessions SET status = 'CANCELLED', cancelled_at = :at, cancellation_message_id = :mid"
            " WHERE booking_request_id = 'bk_old'",
            at=T0,
            mid=uuid.uuid4(),
        )
        await execute(url, "UPDATE session_reservations SET status = 'CANCELLED'")
        await previous_release_writes(url, "bk_old", 2, "Chemistry")
        [old] = await query(url, "SELECT status, title FROM live_sessions WHERE booking_request_id = 'bk_old'")
        assert old == {"status": "CANCELLED", "title": "Chemistry"}
        with pytest.raises(Exception, match="ck_live_sessions_cancellation"):  # CANCELLED needs its cancellation
            await execute(url, "UPDATE live_sessions SET cancelled_at = NULL WHERE booking_request_id = 'bk_old'")
        with pytest.raises(Exception, match="ck_session_reservations_status"):
            await execute(url, "UPDATE session_reservations SET status = 'MAYBE'")

        with pytest.raises(RuntimeError, match="1 live sessions and 2 reservations are CANCELLED"):
            await alembic(url, "downgrade", "0001")
        assert await version(url) == "0002"  # refused as a whole: nothing changed

        await execute(url, "DELETE FROM live_sessions WHERE status = 'CANCELLED'")
        await execute(url, "UPDATE session_reservations SET status = 'CONFIRMED'")
        await alembic(url, "downgrade", "0001")

        assert await version(url) == "0001"
        [kept] = await query(url, "SELECT booking_request_id, status, title FROM live_sessions")
        assert kept == {"booking_request_id": "bk_during_deploy", "status": "SCHEDULED", "title": "Physics"}
        columns = await query(
            url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'live_sessions'"
        )
        assert not {c["column_name"] for c in columns} & {"cancelled_at", "cancellation_reason"}
        with pytest.raises(Exception, match="ck_live_sessions_status"):
            await execute(url, "UPDATE live_sessions SET status = 'CANCELLED'")
        await alembic(url, "upgrade", "0002")  # and up again
        assert await version(url) == "0002"
