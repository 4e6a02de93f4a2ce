"""Configuration from the environment, prefix ``BOOKING_`` (see CONTRACT.md, "Process and configuration")."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError as UrlError

from booking_sessions.ops.arguments import ArgumentError, parse_duration


def _retention(value: object) -> object:
    """``30d``, ``12h``, ``2w`` (the operators' duration syntax) or ``off``; a timedelta as it is."""
    if isinstance(value, str):
        if value.strip().lower() in ("off", "none", "0"):
            return None
        try:
            return parse_duration(value)
        except ArgumentError as error:
            raise ValueError(str(error)) from None
    return value


def _at_least_an_hour(value: timedelta | None) -> timedelta | None:
    # The inbox is the duplicate check of recent redeliveries: a rebalance's redeliveries are seconds old.
    if value is not None and value < timedelta(hours=1):
        raise ValueError("must be at least 1h (or off)")
    return value


Retention = Annotated[timedelta | None, BeforeValidator(_retention), AfterValidator(_at_least_an_hour)]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DatabaseSslMode = Literal["disable", "require", "verify-ca", "verify-full"]

# 256 bits: a room name can then be found only by guessing the key, never by trying a word list.
MIN_MEETING_SECRET_BYTES = 32


class Settings(BaseSettings):
    """Every knob of the service. Nothing reads this at import time: ``cli.py`` builds it and passes it on."""

    # hide_input_in_errors: a refused value (a short meeting secret, say) never appears in an error's text.
    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore", hide_input_in_errors=True)

    kafka_bootstrap: str | None = Field(default=None, description="Kafka bootstrap servers, host:port[,host:port]")
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL, postgresql+asyncpg://user:pw@host:5432/db"
    )
    input_topic: str = "booking.events"
    output_topic: str = "session.events"
    dlq_topic: str = "booking.events.dlq"
    group_id: str = "booking-sessions"
    meeting_base_url: str = "https://meet.jit.si"
    # The meeting secret (README, "The meeting secret"): one block, checked by _meeting_secret_stripped.
    meeting_secret: SecretStr | None = Field(
        default=None, description=f"HMAC key of meeting room names, at least {MIN_MEETING_SECRET_BYTES} bytes"
    )
    meeting_key_version: int = Field(
        default=1, ge=1, le=9999, description="version of BOOKING_MEETING_SECRET; raise it with each new secret"
    )
    embedded_servers: Literal["allow", "forbid"] = Field(
        default="allow", description="forbid: `run` never starts embedded servers (the production image)"
    )
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="0 turns the HTTP server off")
    metrics_host: str = Field(
        default="127.0.0.1", description="address of /metrics, /healthz and /readyz; 0.0.0.0 in a container"
    )
    metrics_refresh_s: float = Field(default=5.0, gt=0, description="how often consumer lag and outbox are sampled")
    max_message_bytes: int = Field(default=64 * 1024, ge=1024, description="larger records are dead-lettered")
    max_key_bytes: int = Field(default=1024, ge=64, description="records with a larger key are dead-lettered")
    max_header_count: int = Field(default=64, ge=0, description="records with more headers are dead-lettered")
    max_header_bytes: int = Field(
        default=16 * 1024, ge=0, description="records whose header names and values take more are dead-lettered"
    )
    max_clock_skew_s: float = Field(
        default=3600.0, ge=0, description="how much later than its Kafka record's timestamp occurred_at may be"
    )
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
    # Unset (or empty): each command's own default, see ``logging_level``. Read nowhere else.
    log_level: str | None = Field(
        default=None,
        description="DEBUG, INFO, WARNING or ERROR; unset: INFO for run and migrate, WARNING for the other commands",
    )

    # Retention that `run` keeps by itself (booking_sessions/retention.py); README, "Retention".
    inbox_retention: Retention = Field(
        default=timedelta(days=30),
        description="inbox rows older than this are deleted (30d, 12h, 2w; off: never); at least 1h",
    )
    outbox_retention: Retention = Field(
        default=timedelta(days=7), description="published outbox rows older than this are deleted (off: never)"
    )
    retention_interval_s: float = Field(default=300.0, gt=0, description="how often retention runs a round")
    retention_batch_rows: int = Field(default=5000, ge=1, description="rows deleted per retention transaction")

    # Kafka security, for every consumer, producer and admin client (booking_sessions/kafka_options.py).
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_ssl_cafile: Path | None = Field(default=None, description="PEM CA bundle; default: the system's CAs")
    kafka_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM private key of the client certificate")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="password of an encrypted keyfile")
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    # Transport safety (README "Security"): a cleartext password on the wire only when asked for by this name;
    # TLS to PostgreSQL for every engine the service builds (booking_sessions/database_tls.py).
    kafka_allow_cleartext_password: bool = Field(
        default=False, description="allow SASL PLAIN over SASL_PLAINTEXT: the password crosses the network readable"
    )
    database_ssl_mode: DatabaseSslMode | None = Field(
        default=None, description="disable, require, verify-ca or verify-full; unset: asyncpg's default (prefer)"
    )
    database_ssl_rootcert: Path | None = Field(
        default=None, description="PEM CA bundle the server is verified against; default: the system's CAs"
    )

    @field_validator("meeting_secret", mode="after")
    @classmethod
    def _meeting_secret_stripped(cls, value: SecretStr | None) -> SecretStr | None:
        """The stripped secret (a file or secret mount adds a trailing newline); empty counts as not set.

        Raises a validation error naming only the length, when fewer than MIN_MEETING_SECRET_BYTES bytes are left.
        """
        if value is None:
            return None
        stripped = value.get_secret_value().strip()
        if not stripped:
            return None
        size = len(stripped.encode())
        if size < MIN_MEETING_SECRET_BYTES:
            raise PydanticCustomError(
                "meeting_secret_short",
                "must be at least {minimum} bytes after stripping whitespace, got {size} "
                "(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
                {"minimum": MIN_MEETING_SECRET_BYTES, "size": size},
            )
        return SecretStr(stripped)

    def secret_values(self) -> list[SecretStr | str | None]:
        """Every secret of the configuration, for the log filter: meeting secret, Kafka and database passwords."""
        password = None
        if self.database_url is not None:
            try:
                password = make_url(self.database_url.get_secret_value()).password
            except UrlError:
                password = None  # refused by _consistent already; nothing to mask
        return [self.meeting_secret, self.kafka_sasl_password, self.kafka_ssl_key_password, password]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Refuse at start what would fail later, or silently not do what was meant; never echo a value."""
        problems = [
            *_database_url_problems(self.database_url),
            *_kafka_security_problems(self),
            *_transport_problems(self),
        ]
        if problems:
            raise PydanticCustomError("configuration", "; ".join(problems))
        return self

    def logging_level(self, *, quiet: bool = False) -> str:
        """The level name for ``booking_sessions.logs.configure_logging``: BOOKING_LOG_LEVEL when set and not empty;
        else ``INFO`` for the service's commands (``run``, ``migrate``: one line per batch), ``WARNING`` for a
        ``quiet`` one (``demo`` and the operators' commands, whose progress bars and summaries speak for them, and
        whose warnings still show why a broker refused)."""
        return self.log_level or ("WARNING" if quiet else "INFO")

    @property
    def embedded(self) -> bool:
        """Neither the broker nor the database given: ``run`` and ``demo`` start their own."""
        return self.kafka_bootstrap is None and self.database_url is None

    def database_url_value(self) -> str:
        """The database URL in clear (for the engine only, never for a message); raises ValueError when unset."""
        if self.database_url is None:
            raise ValueError("BOOKING_DATABASE_URL is not set")
        return self.database_url.get_secret_value()


def _database_url_problems(url: SecretStr | None) -> list[str]:
    if url is None:
        return []
    try:
        parsed = make_url(url.get_secret_value())
    except UrlError:
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


def _transport_problems(s: Settings) -> list[str]:
    """A password readable on the wire, and PostgreSQL TLS settings that would not do what they say."""
    problems: list[str] = []
    if (
        s.kafka_security_protocol == "SASL_PLAINTEXT"
        and s.kafka_sasl_mechanism == "PLAIN"
        and not s.kafka_allow_cleartext_password
    ):
        problems.append(
            "BOOKING_KAFKA_SASL_MECHANISM=PLAIN over BOOKING_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the "
            "password in cleartext: use SASL_SSL (or SCRAM), or set BOOKING_KAFKA_ALLOW_CLEARTEXT_PASSWORD=true"
        )
    rootcert = s.database_ssl_rootcert
    if rootcert is not None:
        if s.database_ssl_mode not in ("verify-ca", "verify-full"):
            problems.append("BOOKING_DATABASE_SSL_ROOTCERT set, but BOOKING_DATABASE_SSL_MODE is not verify-ca/full")
        if not (rootcert.is_file() and os.access(rootcert, os.R_OK)):
            problems.append(f"BOOKING_DATABASE_SSL_ROOTCERT={rootcert}: no such readable file")
    if s.database_ssl_mode not in (None, "disable") and s.database_url is None:
        problems.append("BOOKING_DATABASE_SSL_MODE needs BOOKING_DATABASE_URL (the embedded PostgreSQL has no TLS)")
    if s.database_ssl_mode is not None and (given := _url_tls_parameters(s.database_url)):
        problems.append(f"BOOKING_DATABASE_SSL_MODE and ?{given[0]}= in BOOKING_DATABASE_URL: choose one")
    return problems


def _url_tls_parameters(url: SecretStr | None) -> list[str]:
    """The query parameters of the URL that would also set TLS (asyncpg reads ``ssl`` and ``sslmode``)."""
    if url is None or _database_url_problems(url):
        return []
    return sorted(set(make_url(url.get_secret_value()).query) & {"ssl", "sslmode"})
