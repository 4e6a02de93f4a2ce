"""One fresh, migrated database per stage on the one PostgreSQL server, and what each ends up holding."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import NullPool, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.migrate import upgrade_head


def database_url(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


ADMIN_TIMEOUT_S = 300.0  # a CREATE, DROP or VACUUM that waits longer (for a lock, say) fails the bench instead


async def _admin(server_url: str, statement: str) -> None:
    """CREATE/DROP DATABASE or VACUUM, run outside a transaction on the database of ``server_url``; raises
    TimeoutError after ADMIN_TIMEOUT_S."""
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with asyncio.timeout(ADMIN_TIMEOUT_S), engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server_url: str, name: str) -> str:
    """A new database named ``name`` at the newest schema revision; its URL."""
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    url = database_url(server_url, name)
    await asyncio.to_thread(upgrade_head, url)
    return url


async def drop_databases(server_url: str, names: Iterable[str]) -> None:
    for name in names:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def vacuum(urls: Iterable[str]) -> None:
    """``VACUUM (ANALYZE)`` each database at ``urls``, whose stage is over: done between the stages, it is not
    done by an autovacuum worker during a later, timed one (seen at 30-70% of a core for up to a second at the
    start of (h1) or (f) after (d) had written 200,000 records; docs/performance-log.md, "Warm-up")."""
    for url in urls:
        await _admin(url, "VACUUM (ANALYZE)")


async def durability(server_url: str) -> str:
    """The settings that decide whether a commit waits for the disk: the bench measures durable commits."""
    engine = create_async_engine(server_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            values = [str(await conn.scalar(text(f"SHOW {name}"))) for name in ("fsync", "synchronous_commit")]
            version = str(await conn.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()
    return f"PostgreSQL {version.split()[0]}, fsync={values[0]}, synchronous_commit={values[1]}"


@dataclass(frozen=True)
class Rows:
    inbox: int
    sessions: int
    participants: int
    reservations: int
    session_created: int
    session_updated: int
    unpublished: int
    cancelled: int = 0  # live sessions CANCELLED
    unannounced: int = 0  # of those, never announced (cancelled at their first write): no outbox row at all
    reservations_cancelled: int = 0
    session_cancelled: int = 0

    @property
    def outbox(self) -> int:
        return self.session_created + self.session_updated + self.session_cancelled


_COUNTS = text(
    """
    SELECT (SELECT count(*) FROM inbox_messages) AS inbox,
           (SELECT count(*) FROM live_sessions) AS sessions,
           (SELECT count(*) FROM session_participants) AS participants,
           (SELECT count(*) FROM session_reservations) AS reservations,
           (SELECT count(*) FROM outbox_messages WHERE payload LIKE '%"type":"SessionCreated"%') AS session_created,
           (SELECT count(*) FROM outbox_messages WHERE payload LIKE '%"type":"SessionUpdated"%') AS session_updated,
           (SELECT count(*) FROM outbox_messages WHERE published_at IS NULL) AS unpublished,
           (SELECT count(*) FROM live_sessions WHERE status = 'CANCELLED') AS cancelled,
           (SELECT count(*) FROM live_sessions s WHERE status = 'CANCELLED'
                AND NOT EXISTS (SELECT FROM outbox_messages o WHERE o.key = s.booking_request_id)) AS unannounced,
           (SELECT count(*) FROM session_reservations WHERE status = 'CANCELLED') AS reservations_cancelled,
           (SELECT count(*) FROM outbox_messages WHERE payload LIKE '%"type":"SessionCancelled"%') AS session_cancelled
    """
)


async def rows(url: str) -> Rows:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(_COUNTS)).one()
    finally:
        await engine.dispose()
    return Rows(*row)


class OutboxWatch:
    """Polls one database for unpublished outbox rows: the relay's share of 'done'."""

    def __init__(self, url: str) -> None:
        self._engine = create_async_engine(url, pool_size=1, max_overflow=0)

    async def unpublished(self) -> int:
        async with self._engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM outbox_messages WHERE published_at IS NULL"))
        return int(count or 0)

    async def count_created(self) -> int:
        """SessionCreated rows in the outbox, published or not."""
        async with self._engine.connect() as conn:
            count = await conn.scalar(
                text("""SELECT count(*) FROM outbox_messages WHERE payload LIKE '%"type":"SessionCreated"%'""")
            )
        return int(count or 0)

    async def close(self) -> None:
        await self._engine.dispose()
