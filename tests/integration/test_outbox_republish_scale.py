"""`outbox republish --all` over an outbox whose chosen ids outgrow work_mem: linear, where its selection then ran
a subplan over the whole list of chosen ids for every row, and a week's outbox (a newcomer's 400,000 rows under
PostgreSQL's default 4 MB, or 100,000 on statistics a bulk write had just made stale) ended at the statement
timeout. Here 60,000 rows outgrow a work_mem of 512 kB, set for the test's database: the same proportions, at a
size the suite can afford."""

from __future__ import annotations

from booking_sessions.settings import Settings
from tests.integration.harness import execute, query
from tests.integration.operator_cli import invoke

ROWS = 60_000  # before the change: minutes of selection, past the timeout below

# Published rows of 20,000 bookings, three each, written in one statement and never analyzed.
_FILL = """
    INSERT INTO outbox_messages (message_id, topic, key, payload, created_at, published_at)
    SELECT gen_random_uuid(), 'session.events', 'bk_' || (n % 20000),
           '{"type": "SessionCreated"}', now() - interval '1 hour', now()
    FROM generate_series(1, :rows) AS n
"""
# For the connections the command opens (ALTER DATABASE takes no parameters).
_SMALL_WORK_MEM = """
    DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '512kB'); END $$
"""


async def test_republish_all_of_a_large_outbox_hands_every_row_back(settings: Settings, database_url: str) -> None:
    assert await execute(database_url, _FILL, rows=ROWS) == ROWS
    await execute(database_url, _SMALL_WORK_MEM)

    result = await invoke(settings, "outbox", "republish", "--all", BOOKING_DATABASE_STATEMENT_TIMEOUT_S="20")

    assert result.exit_code == 0, result.output
    assert f"{ROWS} handed back to the outbox relay" in result.stdout, result.stdout[-500:]
    waiting = await query(database_url, "SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL")
    assert waiting == [{"n": ROWS}]
