"""Every wait on PostgreSQL has a deadline from settings (booking_sessions/service.py), and a driver timeout drops
the connection instead of pooling it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import asyncpg
from sqlalchemy.engine import ExceptionContext

from booking_sessions.database_deadlines import database_deadlines, drop_unusable_connections
from booking_sessions.service import create_engine, relay_step_timeout_s
from booking_sessions.settings import Settings

URL = "postgresql+asyncpg://u:pw@127.0.0.1:5432/db"


def settings(**values: Any) -> Settings:
    return Settings(kafka_bootstrap="b:9092", database_url=URL, **values)


def test_the_database_deadlines_come_from_settings() -> None:
    chosen = settings(
        database_statement_timeout_s=7,
        database_lock_timeout_s=2.5,
        database_idle_in_transaction_timeout_s=20,
        database_connect_timeout_s=3,
    )
    assert database_deadlines(chosen) == {
        "timeout": 3,
        "command_timeout": 12.0,  # the server's statement_timeout answers first while it can
        "server_settings": {
            "statement_timeout": "7000",
            "lock_timeout": "2500",
            "idle_in_transaction_session_timeout": "20000",
        },
    }


def test_the_defaults_bound_every_wait() -> None:
    server = database_deadlines(settings())["server_settings"]
    assert {name: int(ms) for name, ms in server.items()} == {
        "statement_timeout": 30_000,
        "lock_timeout": 10_000,
        "idle_in_transaction_session_timeout": 60_000,
    }
    assert relay_step_timeout_s(settings()) == 95.0


def test_the_engine_bounds_checkout_and_recycles() -> None:
    engine = create_engine(settings(database_pool_timeout_s=4, database_pool_recycle_s=600))
    pool: Any = engine.sync_engine.pool
    assert pool._timeout == 4 and pool._recycle == 600
    # Pinged only after sitting idle (booking_sessions.database_pool), not at every checkout.
    assert not pool._pre_ping
    assert len(pool.dispatch.checkout) == 1 and len(pool.dispatch.checkin) == 1


def context(error: BaseException) -> ExceptionContext:
    return cast(ExceptionContext, SimpleNamespace(original_exception=error, is_disconnect=False))


def test_a_driver_timeout_drops_the_connection_and_other_errors_do_not() -> None:
    timed_out = context(TimeoutError())
    drop_unusable_connections(timed_out)
    assert timed_out.is_disconnect
    refused = context(ValueError("bad value"))
    drop_unusable_connections(refused)
    assert not refused.is_disconnect


def test_a_read_only_refusal_drops_the_connection_and_a_record_s_refusal_does_not() -> None:
    # A session keeps the read-only default it started with: kept in the pool, it refused every write until recycled.
    read_only = context(
        asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction")
    )
    drop_unusable_connections(read_only)
    assert read_only.is_disconnect
    unique = context(asyncpg.exceptions.UniqueViolationError("duplicate key value"))
    drop_unusable_connections(unique)
    assert not unique.is_disconnect
