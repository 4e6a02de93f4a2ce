"""docker-compose.yml and the Dockerfile, checked by reading them: no Docker engine is needed (or used) here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from booking_sessions.observe.tracing import wanted
from booking_sessions.settings import Settings
from tests.servers.containers import POSTGRES_IMAGE
from tests.servers.kafka_jars import kafka_version

ROOT = Path(__file__).resolve().parents[2]
# CONTRACT.md, "Process and configuration": the variables other teams and operators rely on.
CONTRACT_VARIABLES = {
    "BOOKING_KAFKA_BOOTSTRAP",
    "BOOKING_DATABASE_URL",
    "BOOKING_INPUT_TOPIC",
    "BOOKING_OUTPUT_TOPIC",
    "BOOKING_DLQ_TOPIC",
    "BOOKING_GROUP_ID",
    "BOOKING_MEETING_BASE_URL",
    "BOOKING_MEETING_SECRET",
    "BOOKING_METRICS_PORT",
}
PARTITIONS = 12


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def test_the_services(services: dict[str, Any]) -> None:
    assert set(services) == {
        "kafka",
        "topics",
        "postgres",
        "migrate",
        "booking-sessions",
        "prometheus",
        "grafana",
        "jaeger",
    }


def test_images_are_the_ones_the_testcontainers_rung_runs(services: dict[str, Any]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
    assert services["topics"]["image"] == services["kafka"]["image"]
    assert services["postgres"]["image"] == POSTGRES_IMAGE
    for name in ("migrate", "booking-sessions"):
        assert services[name]["build"] == "."
        assert services[name]["image"] == services["migrate"]["image"]


def test_kafka_runs_in_kraft_mode_without_auto_created_topics(services: dict[str, Any]) -> None:
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_service_environment_holds_every_contract_variable_and_only_known_settings(services: dict[str, Any]) -> None:
    known = {f"BOOKING_{name.upper()}" for name in Settings.model_fields}
    for name in ("migrate", "booking-sessions"):
        env = {k: v for k, v in services[name]["environment"].items() if not k.startswith("OTEL_")}
        assert set(env) >= CONTRACT_VARIABLES, f"{name} misses {CONTRACT_VARIABLES - set(env)}"
        assert set(env) <= known, f"{name}: unknown settings {set(env) - known}"
    env = services["booking-sessions"]["environment"]
    assert env["BOOKING_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["BOOKING_DATABASE_URL"].startswith("postgresql+asyncpg://booking:")
    assert env["BOOKING_DATABASE_URL"].endswith("@postgres:5432/booking")
    # Required, never defaulted: `docker compose up` refuses to start without a real secret.
    assert re.fullmatch(r"\$\{BOOKING_MEETING_SECRET:\?[^}]+\}", env["BOOKING_MEETING_SECRET"])


def test_topics_are_created_at_start_with_twelve_partitions(services: dict[str, Any]) -> None:
    env = services["booking-sessions"]["environment"]
    script = "\n".join(services["topics"]["command"])
    [names] = re.findall(r"for t in ([^;]+);", script)
    assert names.split() == [env["BOOKING_INPUT_TOPIC"], env["BOOKING_OUTPUT_TOPIC"], env["BOOKING_DLQ_TOPIC"]]
    assert "--create --if-not-exists" in script and f"--partitions {PARTITIONS}" in script
    assert services["topics"]["restart"] == "no"


def test_health_checks_and_start_order(services: dict[str, Any]) -> None:
    for name in ("kafka", "postgres", "booking-sessions"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"] >= 3, name
    assert "kafka-broker-api-versions.sh" in services["kafka"]["healthcheck"]["test"][1]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["booking-sessions"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
        "topics": {"condition": "service_completed_successfully"},
    }
    assert services["migrate"]["command"] == ["migrate"] and services["booking-sessions"]["command"] == ["run"]


def test_the_service_health_check_asks_healthz_with_python_on_the_metrics_port(services: dict[str, Any]) -> None:
    service = services["booking-sessions"]
    kind, program, flag, code = service["healthcheck"]["test"]
    assert (kind, program, flag) == ("CMD", "python", "-c")  # the slim image has no curl
    port = service["environment"]["BOOKING_METRICS_PORT"]
    assert f"http://127.0.0.1:{port}/healthz" in code
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    compile(code, "healthcheck", "exec")
    # Longer than the drain the service allows itself after SIGTERM.
    grace_s = int(service["stop_grace_period"].removesuffix("s"))
    assert grace_s > Settings.model_fields["shutdown_timeout_s"].default


def test_dockerfile_final_stage_is_slim_non_root_without_build_tools() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) == 2, "a build stage and the final one"
    final = stages[-1]
    # Pinned by digest, the tag kept for readers (the comment above it says how to bump it).
    assert re.search(r"^ARG PYTHON=python:3\.\d+-slim@sha256:[0-9a-f]{64}$", text, flags=re.MULTILINE)
    assert "docker buildx imagetools inspect" in text
    assert final.startswith("${PYTHON}\n")
    [user] = re.findall(r"^USER (\S+)$", final, flags=re.MULTILINE)
    assert user.split(":")[0] not in ("0", "root")
    assert not re.search(r"apt-get|gcc|build-essential", final)
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert re.search(r'^ENTRYPOINT \["booking-sessions"\]$', final, flags=re.MULTILINE)
    # Every package pyproject.toml lists is copied into the build stage (setuptools fails on a missing one).
    copied = set(re.findall(r"^COPY (\w+) \1$", stages[0], flags=re.MULTILINE))
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {package.split(".")[0] for package in listed} <= copied


def test_dockerfile_installs_the_locked_dependencies_with_hashes_and_the_project_alone() -> None:
    text = (ROOT / "Dockerfile").read_text()
    build, final = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert re.search(r"pip wheel .*--no-deps .* \.$", build, flags=re.MULTILINE)
    assert "source=requirements.lock" in final
    assert re.search(r"pip install [^\n]*--require-hashes -r /tmp/requirements\.lock", final)
    assert re.search(r"pip install [^\n]*--no-deps --no-index /wheels/booking_sessions-\*\.whl", final)
    assert "requirements.lock" not in (ROOT / ".dockerignore").read_text()


def test_the_service_sends_its_traces_to_jaeger_over_otlp_http(services: dict[str, Any]) -> None:
    env = services["booking-sessions"]["environment"]
    assert env["OTEL_SERVICE_NAME"] == "booking-sessions"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"  # OTLP/HTTP (booking_sessions/observe/tracing.py)
    assert wanted(env)
    assert not any(k.startswith("OTEL_") for k in services["migrate"]["environment"])
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert jaeger["ports"] == ["127.0.0.1:16686:16686"]  # the UI, on loopback only; OTLP stays in the network
    # The dashboard's link to the traces points at this UI.
    dashboard = (ROOT / "deploy/grafana/dashboards/booking-sessions.json").read_text()
    assert "http://localhost:16686/search?service=booking-sessions" in dashboard
