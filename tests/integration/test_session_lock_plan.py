"""The session lock statement (consumer/store.py ``lock_sessions``) keeps a plan of index lookups even when its
prepared statement settled on a generic plan while the table was empty, as it does in a service that starts on a new
database: with ``= ANY(:ids)`` that plan was a sequential scan, 29 ms a call for 200 ids at 12,000 sessions on
PostgreSQL 15, until an ANALYZE replaced it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio
from sqlalchemy import make_url

from consumer.store import _LOCK_SESSIONS

SESSIONS = 2_000
ASKED = [f"bk_plan_{i:05d}" for i in range(0, SESSIONS, 10)]  # 200 of them, sorted as lock_sessions sorts them
EXECUTE = f"EXECUTE lock_sessions('{{{','.join(ASKED)}}}')"  # EXECUTE takes no bind parameters: an array literal
INSERT_SESSIONS = """
INSERT INTO live_sessions (id, booking_request_id, instructor_id, student_id, title, scheduled_start,
    duration_minutes, meeting_link, snapshot_occurred_at, snapshot_message_id)
SELECT gen_random_uuid(), 'bk_plan_' || lpad(g::text, 5, '0'), 'ins_1', 'stu_1', 'Algebra', now(), 60,
    'https://meet.example/x', now(), gen_random_uuid()
FROM generate_series(0, $1 - 1) AS g
"""


@pytest_asyncio.fixture(loop_scope="session")
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    yield connection
    await connection.close()


async def test_a_plan_made_on_an_empty_table_still_looks_each_booking_up_by_index(conn: asyncpg.Connection) -> None:
    # The statement as the service's driver sends it (one parameter, prepared once on the connection), prepared here
    # in SQL so that EXPLAIN shows the plan PostgreSQL keeps for it.
    await conn.execute(f"PREPARE lock_sessions(text[]) AS {_LOCK_SESSIONS.text.replace(':booking_ids', '$1')}")
    for _ in range(6):  # past the five custom plans after which PostgreSQL may settle on a generic one
        async with conn.transaction():
            assert await conn.fetch(EXECUTE) == []
    await conn.execute(INSERT_SESSIONS, SESSIONS)

    async with conn.transaction():
        found = await conn.fetch(EXECUTE)
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {EXECUTE}"))

    assert [row["booking_request_id"] for row in found] == ASKED  # every one, in the order asked (the lock order)
    assert "Seq Scan on live_sessions" not in plan, plan
    assert "Index Scan using uq_live_sessions_booking_request_id" in plan, plan
