"""Pooled connections are pinged only after they sat idle: a busy service pays no round trip per checkout.

SQLAlchemy's ``pool_pre_ping`` pings at every checkout; with asyncpg that is three round trips (BEGIN, a query,
ROLLBACK) before each batch transaction and each relay step, about a quarter of a small batch's round trips, each a
wait for PostgreSQL and on a busy machine a context switch. A connection handed out moments ago is alive as far as
a ping can tell; one that sat idle (a database restarted overnight, a NAT that forgot the flow) is pinged first and
replaced when dead. One that died within the idle window fails its statement instead: a disconnect, which
invalidates the pool (every older connection is replaced) and is transient, so the batch is retried on a new one.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

# A connection idle for longer than this is pinged before it is handed out. Under load, connections come back
# within milliseconds; the relay and the metrics sampler's come back every few seconds when nothing happens.
PING_AFTER_IDLE_S = 1.0
_RETURNED_AT = "booking_sessions_returned_at"


def ping_idle_connections(engine: Engine, idle_s: float = PING_AFTER_IDLE_S) -> None:
    """Install on ``engine`` (the sync engine of an AsyncEngine, created with ``pool_pre_ping=False``): at checkout,
    a connection returned to the pool more than ``idle_s`` seconds ago is pinged; a dead one raises
    ``DisconnectionError``, on which the pool discards it and hands out another (a new one, at worst)."""

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _handed_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at <= idle_s:
            return  # new, or back moments ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error
        if not alive:
            raise exc.DisconnectionError("pooled connection failed its ping")
