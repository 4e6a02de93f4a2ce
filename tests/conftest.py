"""Fixtures: the servers the ladder picks (tests/servers/ladder.py), a fresh database and fresh topics for each test.

Servers start on first use: a run of tests/unit never starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from sqlalchemy import NullPool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from booking_sessions.dev.embedded import ServerError
from booking_sessions.migrate import upgrade_head
from booking_sessions.settings import Settings
from tests.servers.apache_kafka import ApacheKafka
from tests.servers.ladder import (
    KafkaHandle,
    PostgresHandle,
    choose_kafka,
    choose_postgres,
    kafka_kind,
    kafka_server,
    postgres_kind,
    postgres_server,
)
from tests.toxiproxy import HOW_TO_GET_IT, Proxy, Toxiproxy, server_binary
from tests.waiting import eventually

log = structlog.get_logger(__name__)

INTEGRATION_DIR = Path(__file__).parent / "integration"
TEMPLATE_DATABASE = "bs_template"
DEFAULT_PARTITIONS = 12


def pytest_report_header(config: pytest.Config) -> str:
    chosen = []
    for name, choose, kind in (("kafka", choose_kafka, kafka_kind), ("postgres", choose_postgres, postgres_kind)):
        try:
            chosen.append(f"{name}={kind(choose())}")
        except (ValueError, ServerError, FileNotFoundError) as err:
            chosen.append(f"{name}=unavailable ({err})")
    return f"servers (started only if an integration test runs): {', '.join(chosen)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


# --- servers ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaHandle]:
    with kafka_server() as handle:
        yield handle


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresHandle]:
    with postgres_server() as handle:
        yield handle


# --- databases ----------------------------------------------------------------------------------------------


async def _admin_execute(postgres: PostgresHandle, *statements: str) -> None:
    """Run statements outside a transaction (CREATE/DROP DATABASE) on the server's own database."""
    engine = create_async_engine(postgres.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _drop_database(name: str) -> str:
    # FORCE (PostgreSQL 13+): a test that leaked a connection must not break the next one's cleanup.
    return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_database(postgres: PostgresHandle) -> AsyncIterator[str]:
    """A database at the newest migration, copied by each test's ``database_url``: one `alembic upgrade` per run."""
    await _admin_execute(postgres, _drop_database(TEMPLATE_DATABASE), f'CREATE DATABASE "{TEMPLATE_DATABASE}"')
    # A thread: upgrade_head runs its own event loop (Alembic's async env.py).
    await asyncio.to_thread(upgrade_head, postgres.url_for(TEMPLATE_DATABASE))
    yield TEMPLATE_DATABASE
    await _admin_execute(postgres, _drop_database(TEMPLATE_DATABASE))


@contextlib.asynccontextmanager
async def migrated_database(postgres: PostgresHandle, template_database: str) -> AsyncIterator[str]:
    """SQLAlchemy async URL of a new, empty, migrated database (a copy of the template), dropped on leaving."""
    name = f"t_{uuid.uuid4().hex}"
    await _admin_execute(postgres, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield postgres.url_for(name)
    finally:
        await _admin_execute(postgres, _drop_database(name))


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(postgres: PostgresHandle, template_database: str) -> AsyncIterator[str]:
    """An empty, migrated database of this test's own."""
    async with migrated_database(postgres, template_database) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's database, without a pool (each connection closed when returned); disposed after."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


# --- topics -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dlq: str
    group_id: str


MakeTopics = Callable[..., Awaitable[Topics]]


async def _create_topics(admin: AIOKafkaAdminClient, partitions: dict[str, int]) -> None:
    response = await admin.create_topics([NewTopic(name, count, 1) for name, count in partitions.items()])
    for name, code, *message in response.topic_errors:
        if code != 0:
            raise for_code(code)(f"cannot create topic {name}: {message[0] if message else ''}")

    async def all_led() -> bool:
        described = {t["topic"]: t for t in await admin.describe_topics(list(partitions))}
        for name, count in partitions.items():
            topic = described.get(name)
            assert topic is not None and topic["error_code"] == 0, f"{name}: {topic}"
            leaders = [p["leader"] for p in topic["partitions"]]
            assert len(leaders) == count and min(leaders) >= 0, f"{name}: leaders {leaders}, want {count}"
        return True

    # Producers and consumers retry on an unknown topic, but a consumer group that joins before the metadata
    # shows all partitions may get a partial assignment and wait for the next refresh.
    await eventually(all_led, what=f"leaders for every partition of {sorted(partitions)}", timeout_s=30)


@pytest_asyncio.fixture(loop_scope="session")
async def make_topics(kafka: KafkaHandle) -> AsyncIterator[MakeTopics]:
    """``await make_topics(partitions=n)``: a new input/output/DLQ topic set and group id, deleted afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    created: list[str] = []

    async def make(partitions: int = DEFAULT_PARTITIONS) -> Topics:
        suffix = uuid.uuid4().hex[:12]
        topics = Topics(
            input=f"booking.events.{suffix}",
            output=f"session.events.{suffix}",
            dlq=f"booking.events.dlq.{suffix}",
            group_id=f"booking-sessions.{suffix}",
        )
        wanted = {topics.input: partitions, topics.output: partitions, topics.dlq: 1}
        created.extend(wanted)
        await _create_topics(admin, wanted)
        return topics

    try:
        yield make
    finally:
        try:
            if created:
                await admin.delete_topics(created)
        except KafkaError as err:  # a leftover topic with a unique name harms nobody
            log.warning("test_topics_not_deleted", topics=created, error=repr(err))
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def topics(request: pytest.FixtureRequest, make_topics: MakeTopics) -> Topics:
    """Topics for this test; the input topic has 12 partitions unless ``@pytest.mark.partitions(n)`` says so."""
    marker = request.node.get_closest_marker("partitions")
    return await make_topics(partitions=marker.args[0] if marker else DEFAULT_PARTITIONS)


@pytest.fixture
def settings(kafka: KafkaHandle, database_url: str, topics: Topics) -> Settings:
    return Settings(
        kafka_bootstrap=kafka.bootstrap,
        database_url=database_url,
        input_topic=topics.input,
        output_topic=topics.output,
        dlq_topic=topics.dlq,
        group_id=topics.group_id,
        meeting_secret="test-secret-of-at-least-32-bytes-0000",
        metrics_port=0,
    )


@pytest.fixture
def apache_kafka_only(kafka: KafkaHandle) -> None:
    """Judged on Apache Kafka, as production runs it: on Tansu two `run`s rejoin their group so slowly that a fault
    test cannot finish within the suite's per-test bound (README, "On the Tansu broker"). Every never-hangs module
    (test_deadlines_*.py) uses it for all its tests: ``pytestmark = pytest.mark.usefixtures("apache_kafka_only")``."""
    if not isinstance(kafka.server, ApacheKafka):
        pytest.skip(f"the never-hangs faults are judged on Apache Kafka, not {kafka.kind}")


# --- the fault-injecting proxy (tests/toxiproxy.py) -------------------------------------------------------------


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[Toxiproxy]:
    """A toxiproxy server; skipped where none is built, but never in CI (.ci/run builds it)."""
    binary = server_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(HOW_TO_GET_IT)
        pytest.skip(HOW_TO_GET_IT)
    with Toxiproxy.running(binary) as proxy:
        yield proxy


@pytest.fixture
def database_proxy(toxiproxy: Toxiproxy, postgres: PostgresHandle) -> Iterator[Proxy]:
    """A proxy in front of PostgreSQL, for this test (point a database URL at ``listen_port``)."""
    url = make_url(postgres.url)
    name = f"postgres-{uuid.uuid4().hex[:8]}"
    proxy = toxiproxy.proxy(name, f"{url.host}:{url.port}")
    yield proxy
    toxiproxy.delete(name)


@pytest.fixture
def kafka_proxy(toxiproxy: Toxiproxy, kafka: KafkaHandle) -> Iterator[Proxy]:
    """A proxy in front of the broker's PROXIED listener (tests/servers/apache_kafka.py), whose advertised address
    is the proxy's: a client bootstrapped at ``127.0.0.1:listen_port`` talks to the broker through it only."""
    if not isinstance(kafka.server, ApacheKafka):
        pytest.skip(f"the {kafka.kind} broker has no listener advertised through a proxy (Apache Kafka has)")
    server = kafka.server
    proxy = toxiproxy.proxy("kafka", f"127.0.0.1:{server.proxied_port}", listen_port=server.proxy_port)
    yield proxy
    toxiproxy.delete("kafka")
