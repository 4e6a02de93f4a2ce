"""The apache rung's broker: one KRaft broker+controller run from the Maven Central jars with `java`."""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import structlog

from booking_sessions.dev.embedded import (
    RestartableServer,
    ServerError,
    ensure_port_free,
    free_port,
    log_tail,
    stop_process,
)
from tests.servers.kafka_jars import CACHE_DIR, apache_kafka_classpath
from tests.servers.kafka_probe import KAFKA_READY_TIMEOUT_S, wait_kafka_ready

log = structlog.get_logger(__name__)

KAFKA_STOP_TIMEOUT_S = 30.0


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
        """A broker on ``port`` (a free one by default), answering before this returns; ``data_dir`` (kept if
        given, else temporary) is formatted on first use. Raises ServerError when it does not come up."""
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
