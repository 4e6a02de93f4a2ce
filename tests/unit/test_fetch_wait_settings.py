"""BOOKING_KAFKA_FETCH_MAX_WAIT_MS: 100 ms on configured brokers, 20 ms on the embedded Tansu unless set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from booking_sessions.dev.servers import EMBEDDED_FETCH_MAX_WAIT_MS, on_embedded_servers
from booking_sessions.settings import Settings

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def test_configured_brokers_get_100_ms() -> None:
    assert Settings().kafka_fetch_max_wait_ms == 100


def test_the_embedded_broker_gets_a_shorter_wait_and_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOOKING_KAFKA_FETCH_MAX_WAIT_MS", raising=False)
    settings = on_embedded_servers(Settings(), "127.0.0.1:9092", URL)
    assert settings.kafka_fetch_max_wait_ms == EMBEDDED_FETCH_MAX_WAIT_MS == 20
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.database_url_value() == URL


def test_a_wait_the_operator_set_is_kept_on_embedded_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_KAFKA_FETCH_MAX_WAIT_MS", "250")
    assert on_embedded_servers(Settings(), "127.0.0.1:9092", URL).kafka_fetch_max_wait_ms == 250


@pytest.mark.parametrize("text", ["0", "-5", "10001", "soon"])
def test_out_of_range_or_unreadable_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("BOOKING_KAFKA_FETCH_MAX_WAIT_MS", text)
    with pytest.raises(ValidationError, match="kafka_fetch_max_wait_ms"):
        Settings()
