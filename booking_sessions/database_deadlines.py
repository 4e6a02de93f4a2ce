"""Deadlines on every wait for PostgreSQL (CONTRACT "Delivery": no wait without a deadline), for the engine that
``booking_sessions.service.create_engine`` builds: asyncpg's connect arguments and the hook that drops a connection
that stopped answering (or that a standby answers)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import ExceptionContext

from booking_sessions.settings import Settings
from models.faults import READ_ONLY_TRANSACTION, sqlstate

# The driver's own deadline trails the server's statement_timeout: while the server answers, its clean error (the
# connection stays usable) comes first; the driver's fires only when nothing comes back at all.
DRIVER_MARGIN_S = 5.0


def database_deadlines(settings: Settings) -> dict[str, Any]:
    """asyncpg ``connect()`` arguments that bound every wait on PostgreSQL: the connection, each command, and
    server-side the statement, each lock wait and a transaction left idle (its locks freed when a client vanished).
    """
    return {
        "timeout": settings.database_connect_timeout_s,
        "command_timeout": settings.database_statement_timeout_s + DRIVER_MARGIN_S,
        "server_settings": {
            "statement_timeout": _ms(settings.database_statement_timeout_s),
            "lock_timeout": _ms(settings.database_lock_timeout_s),
            "idle_in_transaction_session_timeout": _ms(settings.database_idle_in_transaction_timeout_s),
        },
    }


def drop_unusable_connections(context: ExceptionContext) -> None:
    """SQLAlchemy ``handle_error`` hook for connections that must never go back to the pool, nor their siblings
    opened at the same time: marked a disconnect, each is closed and every older pooled connection is replaced on
    its next checkout. The error itself stays transient (models.faults): the work is retried on a new connection.

    - A driver timeout: the connection stopped answering (a failover behind a load balancer, a NAT that forgot the
      flow).
    - SQLSTATE 25006, a write refused as read-only: the server is a standby now (a failover left the connection on
      the demoted primary), or the database's default became read-only. A session reads its defaults when it
      starts, so a kept connection would refuse every write for as long as it lives (``pool_recycle``), even once
      the database takes writes again; a new one reaches whatever server the address leads to now."""
    error = context.original_exception
    if isinstance(error, TimeoutError) or sqlstate(error) == READ_ONLY_TRANSACTION:
        context.is_disconnect = True


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))
