"""Which broker and database the command talks to: the configured ones, or embedded ones it starts itself."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from pydantic import SecretStr

from booking_sessions.dev.embedded import TansuBroker
from booking_sessions.dev.postgres import PostgresCluster, start_embedded_postgres
from booking_sessions.logs import register_secrets
from booking_sessions.meeting import ThrowawaySecret
from booking_sessions.migrate import upgrade_head
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics
from models.errors import ConfigurationError

log = structlog.get_logger(__name__)

# Embedded topics get the partition count the compose file provisions in production.
EMBEDDED_PARTITIONS = 12
# Tansu holds a fetch for its whole wait even when a record arrives meanwhile (Apache Kafka answers at once), so on
# the embedded broker the wait is added to every record of a quiet stream: 100 ms gave (h1) a p99 of 65 ms. Shorter
# costs idle polling: each empty fetch takes Tansu about 2 ms of CPU, 50 a second at 20 ms (docs/performance-log.md,
# "Where the idle path's time goes").
EMBEDDED_FETCH_MAX_WAIT_MS = 20


@dataclass(frozen=True)
class Servers:
    """What ``servers_for`` yields: settings naming both servers, and whether they are embedded ones."""

    settings: Settings  # with the bootstrap and database URL filled in
    embedded: bool


@contextlib.asynccontextmanager
async def servers_for(
    settings: Settings, say: Callable[[str], None], *, forbid_embedded: bool = False
) -> AsyncIterator[Servers]:
    """Yield settings that point at a broker and a database; start embedded ones when neither is configured.

    Embedded servers (Tansu and PostgreSQL, migrated, topics made with EMBEDDED_PARTITIONS) come with a throwaway
    meeting secret when none is set (``with_throwaway_secret``); configured servers get the settings unchanged, so
    ``run`` there stops with "BOOKING_MEETING_SECRET is required" without one (``booking_sessions.meeting``).
    ``say`` prints where the embedded servers are; they stop when the block ends. Raises ConfigurationError when
    only one server is configured, or when either is missing and ``forbid_embedded`` (``run`` under
    BOOKING_EMBEDDED_SERVERS=forbid, as in the production image: fail closed, never serve on throwaway servers);
    ServerError when an embedded server does not start.
    """
    if settings.kafka_bootstrap is not None and settings.database_url is not None:
        yield Servers(settings, embedded=False)
        return
    if forbid_embedded:
        unset = [
            name
            for name, value in (
                ("BOOKING_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                ("BOOKING_DATABASE_URL", settings.database_url),
            )
            if value is None
        ]
        raise ConfigurationError(
            f"{' and '.join(unset)} not set, and BOOKING_EMBEDDED_SERVERS=forbid: `run` needs both servers "
            "configured (embedded servers are for the quick start and `demo`)"
        )
    if not settings.embedded:
        missing = "BOOKING_DATABASE_URL" if settings.database_url is None else "BOOKING_KAFKA_BOOTSTRAP"
        raise ConfigurationError(
            f"{missing} is not set: set both BOOKING_KAFKA_BOOTSTRAP and BOOKING_DATABASE_URL, "
            "or neither to use embedded servers"
        )
    broker: TansuBroker | None = None
    database: PostgresCluster | None = None
    try:
        say("starting an embedded Kafka-protocol broker (Tansu, memory only) and PostgreSQL ...")
        broker = await asyncio.to_thread(TansuBroker.start)
        database = await asyncio.to_thread(start_embedded_postgres)
        say(f"embedded broker:     {broker.bootstrap}")
        say(f"embedded PostgreSQL: {database.url} (data in {database.data_dir})")
        await asyncio.to_thread(upgrade_head, database.url)
        configured = with_throwaway_secret(on_embedded_servers(settings, broker.bootstrap, database.url))
        await ensure_topics(
            broker.bootstrap,
            [settings.input_topic, settings.output_topic, settings.dlq_topic],
            EMBEDDED_PARTITIONS,
        )
        yield Servers(configured, embedded=True)
    finally:
        if broker is not None:
            broker.stop()
        if database is not None:
            database.stop()
        if broker is not None or database is not None:
            say("embedded servers stopped")


def on_embedded_servers(settings: Settings, bootstrap: str, database_url: str) -> Settings:
    """``settings`` pointed at the embedded broker (``host:port``) and database (a SQLAlchemy URL), with the fetch
    wait Tansu needs (``EMBEDDED_FETCH_MAX_WAIT_MS``) unless BOOKING_KAFKA_FETCH_MAX_WAIT_MS was set."""
    update: dict[str, object] = {"kafka_bootstrap": bootstrap, "database_url": SecretStr(database_url)}
    if "kafka_fetch_max_wait_ms" not in settings.model_fields_set:
        update["kafka_fetch_max_wait_ms"] = EMBEDDED_FETCH_MAX_WAIT_MS
    return settings.model_copy(update=update)


def with_throwaway_secret(settings: Settings) -> Settings:
    """Throwaway servers, throwaway meeting secret: links stay unguessable (CONTRACT, "Rows": meeting_link) and
    nothing outlives the process.

    Returns ``settings`` with a new random secret (32 bytes, URL-safe) when none is set, logged as
    ``meeting_secret_throwaway`` (never its value), masked in logs, never recorded in ``meeting_keys``
    (``ThrowawaySecret``); a configured secret is kept. Each call without a secret makes a new one: callers
    (``servers_for``, ``Demo``) call it once per process, so every session of the run derives its room under the
    same key.
    """
    if settings.meeting_secret is not None:
        return settings
    secret = ThrowawaySecret(secrets.token_urlsafe(32))
    register_secrets([secret])
    log.warning(
        "meeting_secret_throwaway",
        reason="no BOOKING_MEETING_SECRET: a random key for this process only; its links die with it",
    )
    return settings.model_copy(update={"meeting_secret": secret})
