"""Apache Kafka's broker jars, fetched from Maven Central by tests/kafka-pom.xml (the one place the version is
written) into .cache/, and whether this machine can run them (Java 17+, and the jars or Maven to fetch them)."""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import structlog

from booking_sessions.dev.embedded import ServerError

log = structlog.get_logger(__name__)

TESTS_DIR = Path(__file__).resolve().parent.parent
KAFKA_POM = TESTS_DIR / "kafka-pom.xml"
CACHE_DIR = TESTS_DIR.parent / ".cache"


@functools.cache
def kafka_version() -> str:
    """The Kafka version written once, in tests/kafka-pom.xml."""
    ns = "{http://maven.apache.org/POM/4.0.0}"
    found = ET.parse(KAFKA_POM).getroot().find(f"{ns}properties/{ns}kafka.version")
    if found is None or found.text is None:
        raise ValueError(f"no kafka.version property in {KAFKA_POM}")
    return found.text.strip()


def java_major_version() -> int | None:
    """The major version `java -version` reports (8 for "1.8.0"), or None without a `java` on the PATH."""
    if shutil.which("java") is None:
        return None
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(?:1\.)?(\d+)', out)
    return int(match.group(1)) if match else None


def kafka_libs_dir(cache_dir: Path) -> Path:
    """Where the jars of the pom's Kafka version live: <cache_dir>/kafka-<version>/libs."""
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
