"""The plans PostgreSQL may keep for the service's statements when it starts on a new database: asyncpg prepares each
statement once per connection, and after five executions PostgreSQL may keep a generic plan, here one made for empty
tables. Each must still read the tables by index (consumer/store.py, above _INSERT_INBOX): a plan that hashes the
batch and scans a whole table costs more with every row the table gains, on every call, until an ANALYZE replaces
it. The session locks with ``= ANY(:ids)`` took 29 ms a call for 200 ids at 12,000 sessions on PostgreSQL 15."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import NullPool, TextClause, make_url, text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions import retention
from consumer import parking, store
from producer import relay

SESSIONS = 2_000
ASKED = [f"bk_plan_{i:05d}" for i in range(0, SESSIONS, 10)]  # 200 of them, sorted as lock_sessions sorts them
EXECUTE = f"EXECUTE booking_lookup('{{{','.join(ASKED)}}}')"  # EXECUTE takes no bind parameters: an array literal
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


@pytest.mark.parametrize(
    "statement",
    [store._LOCK_SESSIONS, parking._EXISTING, parking._LOCKABLE],
    ids=["session locks", "parking: existing", "parking: lockable"],
)
async def test_a_plan_kept_from_an_empty_table_still_looks_each_booking_up_by_index(
    conn: asyncpg.Connection, statement: TextClause
) -> None:
    # The statement as the service's driver sends it (one parameter, prepared once on the connection), prepared here
    # in SQL so that EXPLAIN shows the plan PostgreSQL keeps for it; on every version, PostgreSQL 15 included.
    [parameter] = statement.compile().params
    await conn.execute(f"PREPARE booking_lookup(text[]) AS {statement.text.replace(':' + parameter, '$1')}")
    for _ in range(6):  # past the five custom plans after which PostgreSQL may settle on a generic one
        async with conn.transaction():
            assert await conn.fetch(EXECUTE) == []
    await conn.execute(INSERT_SESSIONS, SESSIONS)

    async with conn.transaction():
        found = await conn.fetch(EXECUTE)
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {EXECUTE}"))

    assert [row["booking_request_id"] for row in found] == ASKED  # every one, in the order asked (the lock order)
    assert "Seq Scan on live_sessions" not in plan, plan
    assert "Scan using uq_live_sessions_booking_request_id" in plan, plan  # an Index (Only) Scan


# Every statement of the batch and relay paths, and the parking lookups (consumer/parking.py).
STATEMENTS = {
    "inbox insert": store._INSERT_INBOX,
    "inbox insert and session locks": store._INSERT_INBOX_AND_LOCK,
    "inbox hashes": store._INBOX_HASHES,
    "known payloads": store._KNOWN_PAYLOADS,
    "session locks": store._LOCK_SESSIONS,
    "the decisions' writes": store._WRITE_DECISIONS,
    "relay: rows of few shards": relay._NEXT_ROWS_OF_FEW,
    "relay: rows of many shards": relay._NEXT_ROWS_OF_MANY,
    "relay: rows of all shards": relay._NEXT_ROWS_OF_ALL,
    "relay: mark published": relay._MARK_PUBLISHED,
    "parking: existing": parking._EXISTING,
    "parking: lockable": parking._LOCKABLE,
}
TABLES = ("inbox_messages", "live_sessions", "session_participants", "session_reservations", "outbox_messages")
# EXPLAIN (GENERIC_PLAN) (PostgreSQL 16+) plans a statement whose $n have no values, as the plan cache's generic plan
# is made; run from PL/pgSQL so that the driver does not ask for those values.
GENERIC_PLAN = """
CREATE FUNCTION pg_temp.generic_plan(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN RETURN QUERY EXECUTE 'EXPLAIN (GENERIC_PLAN) ' || statement; END $$
"""


async def test_no_generic_plan_made_on_empty_tables_scans_a_whole_table(conn: asyncpg.Connection) -> None:
    if conn.get_server_version().major < 16:
        pytest.skip("EXPLAIN (GENERIC_PLAN) is PostgreSQL 16+; the session lock test above covers PostgreSQL 15")
    await conn.execute(GENERIC_PLAN)
    dialect = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves its __init__ untyped
    scans: dict[str, list[str]] = {}
    for name, statement in STATEMENTS.items():
        sql = str(statement.compile(dialect=dialect))  # as the driver sends it: $1, $2 ...
        plan = [row[0] for row in await conn.fetch("SELECT * FROM pg_temp.generic_plan($1)", sql)]
        scans[name] = [line.strip() for line in plan for table in TABLES if f"Seq Scan on {table}" in line]
    assert {name: found for name, found in scans.items() if found} == {}, scans


async def test_retention_plans_each_delete_batch_anew(database_url: str) -> None:
    # Retention's batches join back to the table they delete from; a plan kept from small tables would read all of
    # it for every batch, so each batch is planned for the table as it is (booking_sessions/retention.py).
    engine = create_async_engine(database_url, poolclass=NullPool)
    cutoff = datetime.now(UTC) + timedelta(days=1)  # every row is old enough
    try:
        async with engine.connect() as conn:  # one connection: its prepared statements are the ones asked about
            for target in (retention.INBOX, retention.OUTBOX):
                for _ in range(7):  # past the five custom plans after which PostgreSQL may keep a generic one
                    async with conn.begin():
                        assert await retention.delete_batch(conn, target, cutoff, 100) == 0
            async with conn.begin():
                rows = await conn.execute(
                    text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement LIKE '%WITH doomed AS%' AND statement NOT LIKE '%pg_prepared_statements%'"
                    )
                )
                plans = [tuple(row) for row in rows]
                mode = await conn.scalar(text("SELECT current_setting('plan_cache_mode')"))
    finally:
        await engine.dispose()
    assert plans == [(0, 7), (0, 7)]  # both batches, planned anew every time
    assert mode == "auto"  # for the batch's transaction only
