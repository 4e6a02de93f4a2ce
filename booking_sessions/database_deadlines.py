"""Deadlines on every wait for PostgreSQL (CONTRACT "Delivery": no wait without a deadline), for the engine that
``booking_sessions.service.create_engine`` builds: asyncpg's connect arguments and the hook that drops a connection
that stopped answering."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import ExceptionContext

from booking_sessions.settings import Settings

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


def drop_silent_connections(context: ExceptionContext) -> None:
    """SQLAlchemy ``handle_error`` hook: a driver timeout means the connection stopped answering (a failover behind
    a load balancer, a NAT that forgot the flow). Such a connection must never go back to the pool, nor its
    siblings opened at the same time: marked a disconnect, it is closed and every older pooled connection is
    replaced on its next checkout. The error itself stays transient: the work is retried on a new connection."""
    if isinstance(context.original_exception, TimeoutError):
        context.is_disconnect = True


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))
