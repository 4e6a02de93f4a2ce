"""Configuration from the environment, prefix ``BOOKING_`` (see CONTRACT.md, "Process and configuration")."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    max_message_bytes: int = Field(default=64 * 1024, ge=1024, description="larger records are dead-lettered")
    max_batch_records: int = Field(default=2000, ge=1, description="records taken per getmany")
    relay_batch_rows: int = Field(default=1000, ge=1, description="outbox rows published per relay step")
    shutdown_timeout_s: float = Field(default=30.0, gt=0, description="SIGTERM: time to drain before giving up")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    @property
    def embedded(self) -> bool:
        """Neither the broker nor the database given: ``run`` and ``demo`` start their own."""
        return self.kafka_bootstrap is None and self.database_url is None

    def database_url_value(self) -> str:
        if self.database_url is None:
            raise ValueError("BOOKING_DATABASE_URL is not set")
        return self.database_url.get_secret_value()
