"""The testcontainers rung: apache/kafka and postgres:17 containers, when a Docker engine answers."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from booking_sessions.dev.embedded import free_port
from tests.servers.kafka_jars import kafka_version
from tests.servers.kafka_probe import KAFKA_READY_TIMEOUT_S, wait_kafka_ready

POSTGRES_IMAGE = "postgres:17"


@functools.cache
def docker_available() -> bool:
    """A Docker engine answers within two seconds (no engine: testcontainers is skipped, silently)."""
    try:
        # docker ships no type hints; this is the one place the tests touch it.
        import docker  # type: ignore[import-untyped]
        from docker.errors import DockerException  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (DockerException, OSError):
        return False


@contextlib.contextmanager
def kafka_container() -> Iterator[str]:
    """A single-node apache/kafka container in KRaft mode; yields its bootstrap address once it answers."""
    from testcontainers.core.container import DockerContainer

    # testcontainers' KafkaContainer drives Confluent's image; apache/kafka is configured by KAFKA_* variables.
    # Same port inside and out, so the advertised address is the one the tests reach.
    port = free_port()
    container = DockerContainer(f"apache/kafka:{kafka_version()}").with_bind_ports(port, port)
    host = container.get_docker_client().host()
    settings = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    for name, value in settings.items():
        container.with_env(name, value)
    with container:
        bootstrap = f"{host}:{port}"

        def failed() -> str | None:
            wrapped = container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status in ("running", "created"):
                return None
            logs = wrapped.logs(tail=40).decode(errors="replace")
            return f"kafka container {wrapped.status}:\n{logs}"

        wait_kafka_ready(bootstrap, KAFKA_READY_TIMEOUT_S, failed)
        yield bootstrap


@contextlib.contextmanager
def postgres_container() -> Iterator[str]:
    """A postgres:17 container; yields the SQLAlchemy asyncpg URL of its database."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the community/ split
        from testcontainers.postgres import PostgresContainer

    with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
        yield container.get_connection_url()
