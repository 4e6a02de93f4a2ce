"""The service's HTTP endpoints as a probe or Prometheus sees them: ``run`` in-process with its HTTP server,
GET a URL, scrape /metrics into samples and read one series."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from booking_sessions.observe.http import serving
from booking_sessions.service import Service, open_service, run_until
from booking_sessions.settings import Settings

# (metric name, sorted label pairs) -> sample value, as scraped from /metrics.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Running:
    """The running service and the base URL of its HTTP server."""

    service: Service
    base_url: str


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """``run`` in-process: consumer, relay, sampler and the HTTP server on a free port, stopped afterwards."""
    stop = asyncio.Event()
    async with open_service(settings) as svc:
        with serving(svc.metrics.registry, svc.health, "127.0.0.1", 0) as server:
            task = asyncio.create_task(run_until(svc, stop))
            try:
                yield Running(svc, f"http://127.0.0.1:{server.port}")
            finally:
                stop.set()
                await task


async def get(url: str) -> tuple[int, bytes]:
    """GET ``url`` (10 s timeout): the status code and the body, also for an error status."""

    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    return await asyncio.to_thread(fetch)


async def scrape(base_url: str) -> Samples:
    """Every sample of ``<base_url>/metrics`` (which must answer 200)."""
    status, body = await get(f"{base_url}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample of ``name`` with exactly these labels; 0.0 when there is none."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name``, keyed by its sorted label pairs."""
    return {labels: v for (n, labels), v in samples.items() if n == name}
