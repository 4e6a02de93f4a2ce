"""PostgreSQL TLS settings: the context every engine gets, and what is refused at start."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from booking_sessions.database_tls import database_connect_args
from booking_sessions.migrate import alembic_config
from booking_sessions.settings import Settings
from models.errors import ConfigurationError
from tests.certs import Certificates, make_certificates, openssl_available

URL = "postgresql+asyncpg://booking:pw@db.internal:5432/booking"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if not openssl_available():
        pytest.skip("needs the openssl command to make certificates")
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def no_booking_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("BOOKING_")]:
        monkeypatch.delenv(name)
    yield


def settings(**values: Any) -> Settings:
    return Settings(database_url=URL, **values)


def test_unset_passes_nothing_and_disable_turns_tls_off() -> None:
    assert database_connect_args(settings()) == {}
    assert database_connect_args(settings(database_ssl_mode="disable")) == {"ssl": False}


def test_verify_full_checks_the_chain_against_the_root_cert_only_and_the_hostname(certs: Certificates) -> None:
    context = database_connect_args(settings(database_ssl_mode="verify-full", database_ssl_rootcert=certs.ca))["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_verify_ca_checks_the_chain_not_the_name_and_require_checks_nothing(certs: Certificates) -> None:
    ca = database_connect_args(settings(database_ssl_mode="verify-ca", database_ssl_rootcert=certs.ca))["ssl"]
    assert ca.verify_mode == ssl.CERT_REQUIRED and not ca.check_hostname
    system = database_connect_args(settings(database_ssl_mode="verify-full"))["ssl"]
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    unverified = database_connect_args(settings(database_ssl_mode="require"))["ssl"]
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname


def test_a_root_cert_that_is_not_pem_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "root.crt"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="cannot load BOOKING_DATABASE_SSL_ROOTCERT="):
        database_connect_args(settings(database_ssl_mode="verify-full", database_ssl_rootcert=junk))


def test_the_environment_names_reach_migrate_too(monkeypatch: pytest.MonkeyPatch, certs: Certificates) -> None:
    monkeypatch.setenv("BOOKING_DATABASE_URL", URL)
    monkeypatch.setenv("BOOKING_DATABASE_SSL_MODE", "verify-full")
    monkeypatch.setenv("BOOKING_DATABASE_SSL_ROOTCERT", str(certs.ca))
    args = database_connect_args(Settings())
    assert alembic_config(URL, args).attributes["connect_args"] == args


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"database_ssl_mode": "require", "database_ssl_rootcert": "CA"}, "SSL_MODE is not verify-ca/full"),
        ({"database_ssl_mode": "verify-full", "database_ssl_rootcert": "/nonexistent/ca.pem"}, "no such readable"),
        ({"database_ssl_mode": "verify-full", "database_url": URL + "?ssl=require"}, "?ssl= in BOOKING_DATABASE_URL"),
        ({"database_ssl_mode": "verify-ca2"}, "'disable', 'require', 'verify-ca' or 'verify-full'"),
        ({"database_ssl_mode": "require", "database_url": None}, "SSL_MODE needs BOOKING_DATABASE_URL"),
    ],
)
def test_inconsistent_database_tls_settings_are_refused(
    certs: Certificates, values: dict[str, Any], message: str
) -> None:
    values = {k: str(certs.ca) if v == "CA" else v for k, v in {"database_url": URL, **values}.items()}
    with pytest.raises(ValidationError) as raised:
        Settings(**values)
    assert message in str(raised.value) and "pw@" not in str(raised.value)
