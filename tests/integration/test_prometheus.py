"""A real Prometheus (Debian's package) scrapes a real ``booking-sessions run`` with deploy/prometheus/alerts.yml
loaded, its ``for:`` durations shortened: the retry alert fires when the database goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from booking_sessions.dev.embedded import free_port
from booking_sessions.dev.postgres import PostgresCluster
from booking_sessions.settings import Settings
from tests.integration.harness import running_process
from tests.servers.ladder import PostgresHandle
from tests.waiting import eventually

pytestmark = pytest.mark.faults

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def shortened_rules(source: Path) -> str:
    """The same rules with every ``for:`` at 1 s: what fires after minutes in production fires at once here."""
    return re.sub(r"^(\s*for:\s*)\S+$", r"\g<1>1s", source.read_text(), flags=re.MULTILINE)


@contextlib.contextmanager
def prometheus(work: Path, target: str) -> Iterator[str]:
    """Prometheus scraping ``target`` every second with the shortened rules; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("Debian's prometheus package is not installed")
    (work / "alerts.yml").write_text(shortened_rules(ALERTS))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "alerts.yml")],
        "scrape_configs": [{"job_name": "booking-sessions", "static_configs": [{"targets": [target]}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def api(base_url: str, path: str) -> Any:
    """GET a Prometheus API path; its ``data``, or an AssertionError (not yet) when it does not answer."""

    def fetch() -> Any:
        with urllib.request.urlopen(f"{base_url}{path}", timeout=5) as response:
            return json.load(response)["data"]

    try:
        return await asyncio.to_thread(fetch)
    except OSError as error:
        raise AssertionError(f"Prometheus does not answer yet: {error}") from error


async def firing(base_url: str) -> dict[str, list[dict[str, str]]]:
    """Alert name -> the label sets of its firing instances."""
    found: dict[str, list[dict[str, str]]] = {}
    for alert in (await api(base_url, "/api/v1/alerts"))["alerts"]:
        if alert["state"] == "firing":
            found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return found


async def test_retry_alert_fires_when_the_database_goes_away(
    postgres: PostgresHandle, settings: Settings, tmp_path: Path
) -> None:
    if not isinstance(postgres.server, PostgresCluster):
        pytest.skip("the database is not ours to stop (env or testcontainers)")
    port = free_port()
    async with running_process(settings, BOOKING_METRICS_PORT=str(port), BOOKING_METRICS_HOST="127.0.0.1"):
        with prometheus(tmp_path, f"127.0.0.1:{port}") as base_url:

            async def steady() -> bool:
                series = (await api(base_url, "/api/v1/query?query=booking_sessions_assigned_partitions"))["result"]
                up = (await api(base_url, '/api/v1/query?query=up{job="booking-sessions"}'))["result"]
                assert up and up[0]["value"][1] == "1", f"up: {up}"
                # Prometheus starts with the service, so its first scrapes may fail and fire BookingSessionsDown
                # (for: 1s here) until a rule evaluation sees up == 1: steady is when that has cleared.
                return bool(series) and "BookingSessionsDown" not in await firing(base_url)

            await eventually(
                steady, what="Prometheus scraping the service's metrics, no alert down", timeout_s=60, interval_s=0.5
            )
            assert "BookingSessionsRetrying" not in await firing(base_url)

            outage = postgres.server.down()
            await asyncio.to_thread(outage.__enter__)
            try:

                async def retry_alert() -> list[dict[str, str]]:
                    return (await firing(base_url)).get("BookingSessionsRetrying", [])

                alerts = await eventually(
                    retry_alert, what="BookingSessionsRetrying firing", timeout_s=90, interval_s=0.5
                )
            finally:
                await asyncio.to_thread(outage.__exit__, None, None, None)
    assert {a["component"] for a in alerts} >= {"relay"}
    assert all(a["severity"] == "page" for a in alerts)
