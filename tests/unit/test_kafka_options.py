"""Kafka security settings: what reaches aiokafka, and what is refused at start with a clear message."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.settings import Settings
from models.errors import ConfigurationError
from tests.certs import CLIENT_KEY_PASSWORD, Certificates, make_certificates, openssl_available

pytestmark = pytest.mark.skipif(not openssl_available(), reason="needs the openssl command to make certificates")

SASL_PASSWORD = "sasl-password-never-shown"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def no_booking_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the values a test passes count, not the developer's BOOKING_* variables."""
    for name in [n for n in __import__("os").environ if n.startswith("BOOKING_")]:
        monkeypatch.delenv(name)
    yield


# Every client gets the same deadlines (defaults: BOOKING_KAFKA_REQUEST_TIMEOUT_S 30 s).
DEADLINES = {"request_timeout_ms": 30_000, "connections_max_idle_ms": 300_000}


def settings(**values: Any) -> Settings:
    return Settings(kafka_bootstrap="broker:9093", **values)


def test_plaintext_by_default_adds_nothing_but_the_protocol_and_the_deadlines() -> None:
    assert kafka_client_options(settings(kafka_request_timeout_s=12.5)) == {
        "security_protocol": "PLAINTEXT",
        "request_timeout_ms": 12_500,
        "connections_max_idle_ms": 300_000,
    }


def test_ssl_with_ca_and_client_certificate(certs: Certificates) -> None:
    options = kafka_client_options(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=certs.ca,
            kafka_ssl_certfile=certs.client_cert,
            kafka_ssl_keyfile=certs.client_key,
        )
    )
    assert set(options) == {"security_protocol", "ssl_context", "request_timeout_ms", "connections_max_idle_ms"}
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    # The broker is verified, hostname included, against our CA only.
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_ssl_without_a_ca_file_uses_the_system_cas() -> None:
    context = kafka_client_options(settings(kafka_security_protocol="SSL"))["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_encrypted_client_key_with_its_password(certs: Certificates) -> None:
    options = kafka_client_options(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=certs.ca,
            kafka_ssl_certfile=certs.client_cert,
            kafka_ssl_keyfile=certs.client_key_encrypted,
            kafka_ssl_key_password=CLIENT_KEY_PASSWORD,
        )
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_an_encrypted_client_key_without_its_password_is_a_clear_error_not_a_prompt(certs: Certificates) -> None:
    configured = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=certs.client_cert,
        kafka_ssl_keyfile=certs.client_key_encrypted,
    )
    with pytest.raises(ConfigurationError, match="BOOKING_KAFKA_SSL_KEY_PASSWORD") as raised:
        kafka_client_options(configured)
    assert str(certs.client_key_encrypted) in str(raised.value)


def test_a_file_that_is_not_pem_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match=r"cannot load the Kafka TLS files BOOKING_KAFKA_SSL_CAFILE="):
        kafka_client_options(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=garbage))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls(certs: Certificates, mechanism: str) -> None:
    options = kafka_client_options(
        settings(
            kafka_security_protocol="SASL_SSL",
            kafka_ssl_cafile=certs.ca,
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username="booking-sessions",
            kafka_sasl_password=SASL_PASSWORD,
        )
    )
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "booking-sessions",
        "sasl_plain_password": SASL_PASSWORD,
        **DEADLINES,
    }


def test_sasl_without_tls_has_no_ssl_context() -> None:
    options = kafka_client_options(
        settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="u",
            kafka_sasl_password=SASL_PASSWORD,
        )
    )
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": SASL_PASSWORD,
        **DEADLINES,
    }


def test_plain_over_plaintext_only_when_the_risk_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "BOOKING_KAFKA_BOOTSTRAP": "broker:9092",
        "BOOKING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BOOKING_KAFKA_SASL_MECHANISM": "PLAIN",
        "BOOKING_KAFKA_SASL_USERNAME": "u",
        "BOOKING_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="sends the password in cleartext"):
        Settings()
    monkeypatch.setenv("BOOKING_KAFKA_ALLOW_CLEARTEXT_PASSWORD", "true")
    assert kafka_client_options(Settings())["sasl_mechanism"] == "PLAIN"


def test_the_environment_names(monkeypatch: pytest.MonkeyPatch, certs: Certificates) -> None:
    for name, value in {
        "BOOKING_KAFKA_BOOTSTRAP": "broker:9093",
        "BOOKING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BOOKING_KAFKA_SSL_CAFILE": str(certs.ca),
        "BOOKING_KAFKA_SSL_CERTFILE": str(certs.client_cert),
        "BOOKING_KAFKA_SSL_KEYFILE": str(certs.client_key),
        "BOOKING_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "BOOKING_KAFKA_SASL_USERNAME": "svc",
        "BOOKING_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    }.items():
        monkeypatch.setenv(name, value)
    configured = Settings()
    assert configured.kafka_security_protocol == "SASL_SSL"
    assert (configured.kafka_ssl_cafile, configured.kafka_ssl_certfile, configured.kafka_ssl_keyfile) == (
        certs.ca,
        certs.client_cert,
        certs.client_key,
    )
    assert configured.kafka_sasl_mechanism == "SCRAM-SHA-256" and configured.kafka_sasl_username == "svc"
    assert configured.kafka_sasl_password is not None
    assert configured.kafka_sasl_password.get_secret_value() == SASL_PASSWORD
    assert SASL_PASSWORD not in repr(configured) and SASL_PASSWORD not in str(configured)


REFUSED = [
    (
        {"kafka_security_protocol": "SASL_SSL"},
        "BOOKING_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs BOOKING_KAFKA_SASL_MECHANISM, BOOKING_KAFKA_SASL_USERNAME, "
        "BOOKING_KAFKA_SASL_PASSWORD",
    ),
    (
        {"kafka_sasl_username": "u", "kafka_sasl_password": SASL_PASSWORD},
        "BOOKING_KAFKA_SASL_USERNAME, BOOKING_KAFKA_SASL_PASSWORD set, but BOOKING_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
        "does not use SASL (SASL_PLAINTEXT or SASL_SSL)",
    ),
    (
        {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": "CA"},
        "BOOKING_KAFKA_SSL_CAFILE set, but BOOKING_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS",
    ),
    (
        {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "CERT"},
        "BOOKING_KAFKA_SSL_CERTFILE and BOOKING_KAFKA_SSL_KEYFILE go together (mutual TLS)",
    ),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem: no such"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_key_password": "pw"}, "KEY_PASSWORD set without"),
    (
        {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": "u",
            "kafka_sasl_password": SASL_PASSWORD,
        },
        "BOOKING_KAFKA_SASL_MECHANISM=PLAIN over BOOKING_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the password "
        "in cleartext: use SASL_SSL (or SCRAM), or set BOOKING_KAFKA_ALLOW_CLEARTEXT_PASSWORD=true",
    ),
    ({"kafka_security_protocol": "TLS"}, "Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "'PLAIN', 'SCRAM-SHA-256'"),
]


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_inconsistent_settings_are_refused_with_what_to_set(
    certs: Certificates, values: dict[str, Any], message: str
) -> None:
    real = {"CA": str(certs.ca), "CERT": str(certs.client_cert)}
    values = {k: real.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
    with pytest.raises(ValidationError) as raised:
        settings(**values)
    assert message in str(raised.value)
    assert SASL_PASSWORD not in str(raised.value)


def test_security_without_a_bootstrap_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs BOOKING_KAFKA_BOOTSTRAP"):
        Settings(kafka_security_protocol="SSL")


def test_a_malformed_database_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(database_url="booking:hunter2-db@db:5432/booking")
    assert "BOOKING_DATABASE_URL is not a URL" in str(raised.value)
    assert "hunter2-db" not in str(raised.value)


def test_a_database_url_with_another_driver_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"must start with postgresql\+asyncpg:// \(not postgresql://\)"):
        Settings(database_url="postgresql://booking:pw@db:5432/booking")
