"""Configuration from the environment, prefix ``BOOKING_`` (see CONTRACT.md, "Process and configuration")."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError as UrlError

from booking_sessions import settings_checks as check
from booking_sessions.settings_checks import MAX_BYTES, MAX_ROWS, MAX_SECONDS

Retention = Annotated[timedelta | None, BeforeValidator(check.retention), AfterValidator(check.at_least_an_hour)]
# Empty counts as unset (an env file's ``BOOKING_DATABASE_URL=``); set, each is checked at start.
Bootstrap = Annotated[str | None, BeforeValidator(check.blank_is_unset), AfterValidator(check.bootstrap_servers)]
DatabaseUrl = Annotated[SecretStr | None, BeforeValidator(check.blank_is_unset)]
MeetingBaseUrl = Annotated[
    str, BeforeValidator(check.blank_is_default_meeting_base_url), AfterValidator(check.meeting_base_url)
]
Topic = Annotated[str, AfterValidator(check.topic_name)]
LogLevel = Annotated[str | None, BeforeValidator(check.blank_is_unset), AfterValidator(check.log_level)]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DatabaseSslMode = Literal["disable", "require", "verify-ca", "verify-full"]

# 256 bits: a room name can then be found only by guessing the key, never by trying a word list.
MIN_MEETING_SECRET_BYTES = 32


class Settings(BaseSettings):
    """Every knob of the service. Nothing reads this at import time: ``cli.py`` builds it and passes it on."""

    # hide_input_in_errors: a refused value (a short meeting secret, say) never appears in an error's text.
    # allow_inf_nan=False: "nan" said "less than or equal to 604800" (a newcomer's find); now "a finite number".
    model_config = SettingsConfigDict(
        env_prefix="BOOKING_", extra="ignore", hide_input_in_errors=True, allow_inf_nan=False
    )

    kafka_bootstrap: Bootstrap = Field(default=None, description="Kafka bootstrap servers, host:port[,host:port]")
    database_url: DatabaseUrl = Field(
        default=None, description="SQLAlchemy URL, postgresql+asyncpg://user:pw@host:5432/db"
    )
    input_topic: Topic = "booking.events"
    output_topic: Topic = "session.events"
    dlq_topic: Topic = "booking.events.dlq"
    group_id: str = Field(default="booking-sessions", min_length=1, max_length=255)
    meeting_base_url: MeetingBaseUrl = check.DEFAULT_MEETING_BASE_URL
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
    metrics_refresh_s: float = Field(
        default=5.0, gt=0, le=MAX_SECONDS, description="how often consumer lag and outbox are sampled"
    )
    max_message_bytes: int = Field(
        default=64 * 1024, ge=1024, le=MAX_BYTES, description="larger records are dead-lettered"
    )
    max_key_bytes: int = Field(
        default=1024, ge=64, le=MAX_BYTES, description="records with a larger key are dead-lettered"
    )
    max_header_count: int = Field(
        default=64, ge=0, le=MAX_ROWS, description="records with more headers are dead-lettered"
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=0,
        le=MAX_BYTES,
        description="records whose header names and values take more are dead-lettered",
    )
    max_clock_skew_s: float = Field(
        default=3600.0,
        ge=0,
        le=MAX_SECONDS,
        description="how much later than its Kafka record's timestamp occurred_at may be",
    )
    max_batch_records: int = Field(default=2000, ge=1, le=MAX_ROWS, description="records taken per batch")
    catch_up_batch_records: int = Field(
        default=8000,
        ge=0,
        le=MAX_ROWS,
        description="records taken per batch while at least this many wait (consumer lag); 0, or at most "
        "max_batch_records: never more than max_batch_records",
    )
    parallel_transactions: int = Field(
        default=2, ge=1, le=16, description="transactions in flight per large batch, on disjoint bookings; 1: one"
    )
    relay_batch_rows: int = Field(default=1000, ge=1, le=MAX_ROWS, description="outbox rows published per relay step")
    shutdown_timeout_s: float = Field(
        default=30.0, gt=0, le=MAX_SECONDS, description="SIGTERM: time to drain before giving up"
    )

    # Deadlines: no wait on PostgreSQL or Kafka is unbounded (CONTRACT "it never hangs"). Applied in one place each:
    # booking_sessions/service.py create_engine (database) and booking_sessions/kafka_options.py (Kafka).
    database_statement_timeout_s: float = Field(
        default=30.0, gt=0, le=MAX_SECONDS, description="PostgreSQL statement_timeout; the driver gives up 5 s later"
    )
    database_lock_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=MAX_SECONDS,
        description="PostgreSQL lock_timeout: a row held elsewhere parks its booking (the rest goes on)",
    )
    database_idle_in_transaction_timeout_s: float = Field(
        default=60.0, gt=0, le=MAX_SECONDS, description="PostgreSQL idle_in_transaction_session_timeout"
    )
    database_connect_timeout_s: float = Field(default=10.0, gt=0, le=MAX_SECONDS, description="opening one connection")
    database_pool_timeout_s: float = Field(
        default=30.0, gt=0, le=MAX_SECONDS, description="waiting for a pooled connection"
    )
    database_pool_recycle_s: float = Field(
        default=1800.0, gt=0, le=MAX_SECONDS, description="connections older are replaced"
    )
    kafka_request_timeout_s: float = Field(
        default=30.0, gt=0, le=MAX_SECONDS, description="any one request to a broker"
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description=(
            "how long the broker may hold a fetch while no record is there; on a broker that holds it that long "
            "even when one arrives (Tansu; the embedded servers use 20) every record waits for it"
        ),
    )
    kafka_commit_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=MAX_SECONDS,
        description="an offset commit (aiokafka retries it without end while the broker is away)",
    )
    stall_after_s: float = Field(
        default=120.0,
        gt=0,
        le=MAX_SECONDS,
        description="work waiting and nothing moved for this long: /readyz and /healthz fail, metric stalled=1",
    )
    # Unset (or empty): each command's own default, see ``logging_level``. Read nowhere else.
    log_level: LogLevel = Field(
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
    retention_interval_s: float = Field(
        default=300.0, gt=0, le=MAX_SECONDS, description="how often retention runs a round"
    )
    retention_batch_rows: int = Field(
        default=5000, ge=1, le=MAX_ROWS, description="rows deleted per retention transaction"
    )

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
            except (UrlError, ValueError):
                password = None  # refused by _consistent already; nothing to mask
        return [self.meeting_secret, self.kafka_sasl_password, self.kafka_ssl_key_password, password]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Refuse at start what would fail later, or silently not do what was meant; never echo a value."""
        problems = [
            *check.database_url_problems(self.database_url),
            *check.topics_problems(self),
            *check.kafka_security_problems(self),
            *check.transport_problems(self),
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
