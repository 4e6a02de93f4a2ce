"""Kafka security for real: the service over mutual TLS, and SASL (PLAIN, SCRAM-SHA-256/512) over TLS.

The broker is Apache Kafka from the jars (tests/servers/apache_kafka.py) with two more listeners: SSL requiring a client
certificate, and SASL_SSL. Tansu cannot be the broker here: its 0.6.0 CLI puts --cert and --key in one exclusive
clap group ("the argument '--cert' cannot be used with '--key'") while TLS needs both, so it serves PLAINTEXT only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaConnectionError

from booking_sessions.dev.embedded import ServerError, free_port
from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.service import open_service
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics, read_topic
from models.records import OutgoingRecord
from producer.bookings import as_record
from producer.publish import Publisher
from tests.certs import Certificates, make_certificates, openssl_available
from tests.integration.bookings import event
from tests.integration.harness import Produced, consume_all
from tests.servers.apache_kafka import JVM_OPTIONS, ApacheKafka, new_cluster_id
from tests.servers.kafka_jars import apache_kafka_available
from tests.servers.ladder import choose_kafka

pytestmark = pytest.mark.skipif(
    choose_kafka() != "apache" or not apache_kafka_available() or not openssl_available(),
    reason="needs Apache Kafka from the jars (BOOKING_TEST_KAFKA=apache) and openssl: Tansu 0.6.0 cannot serve TLS "
    "(its --cert and --key options exclude each other), and a container's listeners are not ours to configure",
)

REPO = Path(__file__).resolve().parents[2]
USERS = {"PLAIN": ("plain-user", "plain-password"), "SCRAM-SHA-256": ("scram256", "scram-256-password"),
         "SCRAM-SHA-512": ("scram512", "scram-512-password")}  # fmt: skip
PARTITIONS = 3

SECURE_PROPERTIES = """
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
listener.name.ssl.ssl.client.auth=required
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
"""  # noqa: E501 - one property per line, as Kafka reads them


class SecureKafka(ApacheKafka):
    """The test ladder's Apache Kafka plus an SSL listener (client certificate required) and a SASL_SSL one."""

    certs: ClassVar[Certificates]

    def __init__(self, classpath: str, work_dir: Path, data_dir: Path, port: int, temp_dir: Path | None) -> None:
        super().__init__(classpath, work_dir, data_dir, port, temp_dir)
        self.ssl_bootstrap = f"127.0.0.1:{free_port()}"
        self.sasl_bootstrap = f"127.0.0.1:{free_port()}"

    def _configure(self) -> None:
        super()._configure()  # later keys override earlier ones in a properties file
        keystore = self.work_dir / "server-keystore.pem"
        keystore.write_text(self.certs.server_key.read_text() + self.certs.server_cert.read_text())
        user, password = USERS["PLAIN"]
        with (self.work_dir / "server.properties").open("a") as properties:
            properties.write(
                SECURE_PROPERTIES.format(
                    port=self.port,
                    controller_port=self.controller_port,
                    ssl_port=self.ssl_bootstrap.rpartition(":")[2],
                    sasl_port=self.sasl_bootstrap.rpartition(":")[2],
                    keystore=keystore,
                    ca=self.certs.ca,
                    plain_users=f'user_{user}="{password}"',
                )
            )

    def _format(self) -> None:
        """As the base class, plus the SCRAM users: in KRaft mode they are written into the metadata at format."""
        # One in 64 base64url UUIDs starts with "-", which the tool's parser takes for an option: new_cluster_id
        # never returns one (the TLS broker's own copy of this line once did, and failed its whole module).
        cluster_id = new_cluster_id()
        scram = [
            arg
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for arg in ("--add-scram", f"{mechanism}=[name={USERS[mechanism][0]},password={USERS[mechanism][1]}]")
        ]
        config = str(self.work_dir / "server.properties")
        command = self._java(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", config, *scram,
            options=(*JVM_OPTIONS, "-XX:TieredStopAtLevel=1"),
        )  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServerError(f"kafka StorageTool format failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def secure_kafka(certs: Certificates) -> Iterator[SecureKafka]:
    class Broker(SecureKafka):  # ApacheKafka.start() builds the class it is called on: the certificates ride on it
        pass

    Broker.certs = certs
    with Broker.start() as broker:
        assert isinstance(broker, SecureKafka)
        yield broker


def tls_settings(broker: SecureKafka, certs: Certificates, **values: Any) -> Settings:
    return Settings(
        **{
            "kafka_bootstrap": broker.ssl_bootstrap,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": certs.ca,
            "kafka_ssl_certfile": certs.client_cert,
            "kafka_ssl_keyfile": certs.client_key,
            **values,
        }
    )


def sasl_settings(broker: SecureKafka, certs: Certificates, mechanism: str, password: str | None = None) -> Settings:
    user, right = USERS[mechanism]
    return Settings(
        kafka_bootstrap=broker.sasl_bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=certs.ca,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=user,
        kafka_sasl_password=password or right,
    )


async def round_trip(settings: Settings) -> list[bytes | None]:
    """Create a topic, send one record and read it back, every client with the settings' security options."""
    assert settings.kafka_bootstrap is not None
    options = kafka_client_options(settings)
    topic = f"tls.{uuid.uuid4().hex[:12]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1, **options)
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="tls-test", **options)
    try:
        await publisher.send_all([OutgoingRecord(topic, b"k", b"over tls")])
    finally:
        await publisher.stop()
    return [r.value for r in await read_topic(settings.kafka_bootstrap, topic, expected=1, **options)]


async def test_the_service_consumes_and_relays_over_mutual_tls(
    secure_kafka: SecureKafka, certs: Certificates, database_url: str
) -> None:
    suffix = uuid.uuid4().hex[:12]
    settings = tls_settings(
        secure_kafka,
        certs,
        database_url=database_url,
        input_topic=f"booking.events.{suffix}",
        output_topic=f"session.events.{suffix}",
        dlq_topic=f"booking.events.dlq.{suffix}",
        group_id=f"booking-sessions.{suffix}",
        meeting_secret="test-secret-of-at-least-32-bytes-0000",
        metrics_port=0,
    )
    options = kafka_client_options(settings)
    assert settings.kafka_bootstrap is not None
    await ensure_topics(
        settings.kafka_bootstrap,
        [settings.input_topic, settings.output_topic, settings.dlq_topic],
        PARTITIONS,
        **options,
    )
    produced = Produced()
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="tls-upstream", **options)
    try:
        sent = await publisher.send_all([as_record(event("BookingConfirmed", "bk_tls", 1), settings.input_topic)])
    finally:
        await publisher.stop()
    for metadata in sent:
        produced.add(metadata.topic, metadata.partition, metadata.offset)
    async with open_service(settings) as svc:
        await consume_all(svc, produced)
        assert await svc.relay.drain() == 1
    output = await read_topic(settings.kafka_bootstrap, settings.output_topic, expected=1, **options)
    assert [(r.key, r.value is not None and b'"SessionCreated"' in r.value) for r in output] == [(b"bk_tls", True)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_over_tls(secure_kafka: SecureKafka, certs: Certificates, mechanism: str) -> None:
    assert await round_trip(sasl_settings(secure_kafka, certs, mechanism)) == [b"over tls"]


# aiokafka raises "Unable to bootstrap" and logs the reason: the log line is what tells an operator what to fix.


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_a_wrong_sasl_password_is_refused(
    secure_kafka: SecureKafka, certs: Certificates, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiokafka")
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await round_trip(sasl_settings(secure_kafka, certs, mechanism, password="wrong-password"))
    assert "Authentication failed" in caplog.text and "wrong-password" not in caplog.text


async def test_a_broker_certificate_from_another_ca_is_refused(
    secure_kafka: SecureKafka, certs: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiokafka")
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await round_trip(tls_settings(secure_kafka, certs, kafka_ssl_cafile=certs.other_ca))
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_without_a_client_certificate_the_mutual_tls_listener_refuses(
    secure_kafka: SecureKafka, certs: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        kafka_bootstrap=secure_kafka.ssl_bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=certs.ca
    )
    caplog.set_level(logging.WARNING, logger="aiokafka")
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await round_trip(settings)
    assert "closed" in caplog.text  # TLS 1.3: the broker checks the client certificate after the handshake


async def test_run_refuses_a_wrong_password_at_start_with_a_clear_error_and_never_shows_it(
    secure_kafka: SecureKafka, certs: Certificates, database_url: str
) -> None:
    password = "wrong-password-sentinel"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKING_")}
    env.update(
        BOOKING_KAFKA_BOOTSTRAP=secure_kafka.sasl_bootstrap,
        BOOKING_DATABASE_URL=database_url,
        BOOKING_MEETING_SECRET="meeting-secret-sentinel-of-32-bytes-or-more",
        BOOKING_METRICS_PORT="0",
        BOOKING_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        BOOKING_KAFKA_SSL_CAFILE=str(certs.ca),
        BOOKING_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        BOOKING_KAFKA_SASL_USERNAME=USERS["SCRAM-SHA-256"][0],
        BOOKING_KAFKA_SASL_PASSWORD=password,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "booking_sessions.cli", "run",
        env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    output = (stdout + stderr).decode()
    assert process.returncode == 2, output
    assert f"cannot connect to Kafka at {secure_kafka.sasl_bootstrap} over SASL_SSL" in output
    assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in output  # aiokafka's reason, as a JSON line
    assert password not in output and "meeting-secret-sentinel" not in output
