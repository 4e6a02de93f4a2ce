"""Configuration from the environment, prefix ``BOOKING_`` (see CONTRACT.md, "Process and configuration")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    """Every knob of the service. Nothing reads this at import time: ``cli.py`` builds it and passes it on."""

    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore")

    kafka_bootstrap: str | None = Field(default=None, description="Kafka bootstrap servers, host:port[,host:port]")
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL, postgresql+asyncpg://user:pw@host:5432/db"
    )
    input_topic: str = "booking.events"
    output_topic: str = "session.events"
    dlq_topic: str = "booking.events.dlq"
    group_id: str = "booking-sessions"
    meeting_base_url: str = "https://meet.jit.si"
    meeting_secret: SecretStr | None = Field(default=None, description="HMAC key for meeting room names")
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="0 turns the HTTP server off")
    metrics_host: str = Field(
        default="127.0.0.1", description="address of /metrics, /healthz and /readyz; 0.0.0.0 in a container"
    )
    metrics_refresh_s: float = Field(default=5.0, gt=0, description="how often consumer lag and outbox are sampled")
    max_message_bytes: int = Field(default=64 * 1024, ge=1024, description="larger records are dead-lettered")
    max_batch_records: int = Field(default=2000, ge=1, description="records taken per getmany")
    parallel_transactions: int = Field(
        default=2, ge=1, le=16, description="transactions in flight per large batch, on disjoint bookings; 1: one"
    )
    relay_batch_rows: int = Field(default=1000, ge=1, description="outbox rows published per relay step")
    shutdown_timeout_s: float = Field(default=30.0, gt=0, description="SIGTERM: time to drain before giving up")

    # Deadlines: no wait on PostgreSQL or Kafka is unbounded (CONTRACT "it never hangs"). Applied in one place each:
    # booking_sessions/service.py create_engine (database) and booking_sessions/kafka_options.py (Kafka).
    database_statement_timeout_s: float = Field(
        default=30.0, gt=0, description="PostgreSQL statement_timeout; the driver gives up 5 s later"
    )
    database_lock_timeout_s: float = Field(
        default=10.0, gt=0, description="PostgreSQL lock_timeout: a row locked elsewhere fails the batch, retried"
    )
    database_idle_in_transaction_timeout_s: float = Field(
        default=60.0, gt=0, description="PostgreSQL idle_in_transaction_session_timeout"
    )
    database_connect_timeout_s: float = Field(default=10.0, gt=0, description="opening one connection")
    database_pool_timeout_s: float = Field(default=30.0, gt=0, description="waiting for a pooled connection")
    database_pool_recycle_s: float = Field(default=1800.0, gt=0, description="connections older are replaced")
    kafka_request_timeout_s: float = Field(default=30.0, gt=0, description="any one request to a broker")
    kafka_commit_timeout_s: float = Field(
        default=30.0, gt=0, description="an offset commit (aiokafka retries it without end while the broker is away)"
    )
    stall_after_s: float = Field(
        default=120.0,
        gt=0,
        description="work waiting and nothing moved for this long: /readyz and /healthz fail, metric stalled=1",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    # Kafka security, for every consumer, producer and admin client (booking_sessions/kafka_options.py).
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_ssl_cafile: Path | None = Field(default=None, description="PEM CA bundle; default: the system's CAs")
    kafka_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM private key of the client certificate")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="password of an encrypted keyfile")
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Refuse at start what would fail later, or silently not do what was meant; never echo a value."""
        problems = [*_database_url_problems(self.database_url), *_kafka_security_problems(self)]
        if problems:
            raise PydanticCustomError("configuration", "; ".join(problems))
        return self

    @property
    def embedded(self) -> bool:
        """Neither the broker nor the database given: ``run`` and ``demo`` start their own."""
        return self.kafka_bootstrap is None and self.database_url is None

    def database_url_value(self) -> str:
        if self.database_url is None:
            raise ValueError("BOOKING_DATABASE_URL is not set")
        return self.database_url.get_secret_value()


def _database_url_problems(url: SecretStr | None) -> list[str]:
    if url is None:
        return []
    try:
        parsed = make_url(url.get_secret_value())
    except ArgumentError:
        # Not the parser's message: it quotes the whole URL, password included.
        return ["BOOKING_DATABASE_URL is not a URL (expected postgresql+asyncpg://user:pw@host:5432/db)"]
    if parsed.drivername != "postgresql+asyncpg":
        return [f"BOOKING_DATABASE_URL must start with postgresql+asyncpg:// (not {parsed.drivername}://)"]
    return []


def _kafka_security_problems(s: Settings) -> list[str]:
    protocol = s.kafka_security_protocol
    tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
    problems: list[str] = []
    here = f"BOOKING_KAFKA_SECURITY_PROTOCOL={protocol}"
    if protocol != "PLAINTEXT" and s.kafka_bootstrap is None:
        problems.append(f"{here} needs BOOKING_KAFKA_BOOTSTRAP (the embedded broker speaks PLAINTEXT only)")
    files = {
        "BOOKING_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile,
        "BOOKING_KAFKA_SSL_CERTFILE": s.kafka_ssl_certfile,
        "BOOKING_KAFKA_SSL_KEYFILE": s.kafka_ssl_keyfile,
    }
    tls_given = [name for name, path in files.items() if path is not None]
    if s.kafka_ssl_key_password is not None:
        tls_given.append("BOOKING_KAFKA_SSL_KEY_PASSWORD")
    if tls_given and not tls:
        problems.append(f"{', '.join(tls_given)} set, but {here} does not use TLS (SSL or SASL_SSL)")
    if (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None):
        problems.append("BOOKING_KAFKA_SSL_CERTFILE and BOOKING_KAFKA_SSL_KEYFILE go together (mutual TLS)")
    if s.kafka_ssl_key_password is not None and s.kafka_ssl_keyfile is None:
        problems.append("BOOKING_KAFKA_SSL_KEY_PASSWORD set without BOOKING_KAFKA_SSL_KEYFILE")
    for name, path in files.items():
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            problems.append(f"{name}={path}: no such readable file")
    sasl_given = {
        "BOOKING_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
        "BOOKING_KAFKA_SASL_USERNAME": s.kafka_sasl_username,
        "BOOKING_KAFKA_SASL_PASSWORD": s.kafka_sasl_password,
    }
    if sasl:
        missing = [name for name, value in sasl_given.items() if not value]
        if missing:
            problems.append(f"{here} needs {', '.join(missing)}")
    elif given := [name for name, value in sasl_given.items() if value is not None]:
        problems.append(f"{', '.join(given)} set, but {here} does not use SASL (SASL_PLAINTEXT or SASL_SSL)")
    return problems
