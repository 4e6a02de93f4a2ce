"""Pooled connections are pinged after sitting idle, not at every checkout (booking_sessions/database_pool.py): a
connection killed while idle is replaced before a batch gets it; one killed a moment after its last use fails its
statement as a disconnect, transient, and the pool hands out new connections from then on."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from booking_sessions.database_pool import ping_idle_connections
from models.faults import is_transient
from tests.integration.harness import query


def engine_for(database_url: str, idle_s: float) -> tuple[AsyncEngine, list[str]]:
    """An engine pooled as the service's (``create_engine``: no pre-ping, tests/unit/test_deadlines.py) but pinging
    after ``idle_s``; and a list of what went to the database: each statement, and "ping" for each ping."""
    engine = create_async_engine(database_url, pool_size=2, pool_pre_ping=False)
    ping_idle_connections(engine.sync_engine, idle_s=idle_s)
    ran: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: ran.append(args[2]))
    dialect: Any = engine.dialect
    ping = dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        ran.append("ping")
        return bool(ping(dbapi_connection))

    dialect.do_ping = counted_ping
    return engine, ran


async def backend_of(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def kill(database_url: str, pid: int) -> None:
    rows = await query(database_url, "SELECT pg_terminate_backend(:pid) AS ok", pid=pid)
    assert rows == [{"ok": True}]


async def test_a_connection_back_moments_ago_is_handed_out_without_a_ping(database_url: str) -> None:
    engine, ran = engine_for(database_url, idle_s=60.0)
    try:
        first = await backend_of(engine)
        ran.clear()
        assert await backend_of(engine) == first  # the same pooled connection
        assert ran == ["SELECT pg_backend_pid()"]  # and nothing before the statement: no ping
    finally:
        await engine.dispose()


async def test_a_connection_killed_while_idle_is_replaced_before_use(database_url: str) -> None:
    engine, ran = engine_for(database_url, idle_s=0.0)  # every returned connection counts as idle: pinged
    try:
        first = await backend_of(engine)
        await kill(database_url, first)
        ran.clear()
        second = await backend_of(engine)  # no error: the ping found it dead, the pool opened another
        assert second != first
        assert ran == ["ping", "SELECT pg_backend_pid()"]
    finally:
        await engine.dispose()


async def test_one_killed_within_the_idle_window_fails_as_a_transient_disconnect(database_url: str) -> None:
    engine, _ = engine_for(database_url, idle_s=60.0)
    try:
        first = await backend_of(engine)
        await kill(database_url, first)
        with pytest.raises(exc.DBAPIError) as raised:
            await backend_of(engine)
        assert raised.value.connection_invalidated
        assert is_transient(raised.value)  # the batch is retried, on a new connection:
        assert await backend_of(engine) not in (first, None)
    finally:
        await engine.dispose()
