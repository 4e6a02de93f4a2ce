"""`run` processes watched while a fault is on (the never-hangs tests, CONTRACT "Process"): short deadlines, their
/readyz and /healthz polled in the background, their stderr drained; settings that route them through a proxy;
and the figures each test prints (with -s)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import make_url

from booking_sessions.dev.embedded import free_port
from booking_sessions.settings import Settings
from models.events import BookingEvent
from tests.integration.bookings import START, event
from tests.integration.harness import running_process
from tests.integration.http_probes import get
from tests.integration.workloads import all_applied_and_published
from tests.toxiproxy import Proxy
from tests.waiting import eventually

# Short deadlines, so that each fault is detected within seconds (defaults: README, Configuration).
DEADLINES = {
    "BOOKING_DATABASE_STATEMENT_TIMEOUT_S": "2",  # the driver gives up 5 s later: 7 s
    "BOOKING_DATABASE_LOCK_TIMEOUT_S": "1",
    "BOOKING_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S": "4",
    "BOOKING_DATABASE_CONNECT_TIMEOUT_S": "2",
    "BOOKING_DATABASE_POOL_TIMEOUT_S": "5",
    "BOOKING_KAFKA_REQUEST_TIMEOUT_S": "5",
    "BOOKING_KAFKA_COMMIT_TIMEOUT_S": "5",
    "BOOKING_STALL_AFTER_S": "8",
    "BOOKING_METRICS_REFRESH_S": "0.5",
    "BOOKING_SHUTDOWN_TIMEOUT_S": "5",
}


HANG_S = 120.0  # any wait longer than this is a hang: the test fails


@dataclass
class Probe:
    """One answer of /readyz and /healthz, ``at`` seconds after the fault began."""

    at: float
    ready: int
    readiness: dict[str, Any]
    alive: int
    liveness: dict[str, Any]


@dataclass
class Watched:
    """A `run` process with its HTTP port, its probes polled in the background and its stderr drained."""

    process: asyncio.subprocess.Process
    port: int
    probes: list[Probe] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)
    fault_at: float = math.inf  # set when the fault begins: probes before it are not counted

    async def poll(self) -> None:
        base = f"http://127.0.0.1:{self.port}"
        while self.process.returncode is None:
            with contextlib.suppress(OSError):
                ready, readiness = await get(f"{base}/readyz")
                alive, liveness = await get(f"{base}/healthz")
                at = time.monotonic() - self.fault_at
                self.probes.append(Probe(at, ready, json.loads(readiness), alive, json.loads(liveness)))
            await asyncio.sleep(0.25)  # the polling rate of a probe, not a synchronisation

    async def drain(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():  # a full pipe would block the process's logging
            self.stderr.append(line)

    def since_fault(self) -> list[Probe]:
        return [p for p in self.probes if p.at >= 0]

    def said(self) -> dict[str, Any]:
        """What the probes said since the fault: each distinct failing check and its reason, and the stalls."""
        failing: dict[str, set[str]] = {}
        stalled: set[str] = set()
        for p in self.since_fault():
            for name, check in p.readiness.get("checks", {}).items():
                if not check.get("ok", True):
                    failing.setdefault(name, set()).add(str(check.get("error") or check.get("why") or check))
            stalled |= {f"{name}: {why}" for name, why in p.liveness.get("stalled", {}).items()}
        return {
            "readyz_failing": {name: sorted(reasons)[:3] for name, reasons in failing.items()},
            "healthz_stalled": sorted(stalled)[:3],
        }

    def first(self, ready: bool | None = None, alive: bool | None = None) -> float | None:
        for p in self.since_fault():
            if (ready is None or (p.ready == 200) == ready) and (alive is None or (p.alive == 200) == alive):
                return round(p.at, 1)
        return None


@contextlib.asynccontextmanager
async def watched_run(settings: Settings, **env: str) -> AsyncIterator[Watched]:
    """A `run` process with DEADLINES (and ``env`` over them) and its HTTP port, polled and drained until the
    block ends."""
    port = free_port()
    extra = DEADLINES | {"BOOKING_METRICS_PORT": str(port), "BOOKING_METRICS_HOST": "127.0.0.1"} | env
    async with running_process(settings, **extra) as process:
        run = Watched(process, port)
        tasks = [asyncio.create_task(run.poll()), asyncio.create_task(run.drain())]
        try:
            yield run
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def through(settings: Settings, proxy: Proxy, *, database: bool = False, kafka: bool = False) -> Settings:
    """The settings of a process whose database or broker connections pass the proxy."""
    update: dict[str, Any] = {}
    if database:
        url = make_url(settings.database_url_value()).set(port=proxy.listen_port)
        update["database_url"] = url.render_as_string(hide_password=False)
    if kafka:
        update["kafka_bootstrap"] = f"127.0.0.1:{proxy.listen_port}"
    return Settings.model_validate(settings.model_dump() | update)


def second_wave(bookings: int, step: int = 3) -> list[BookingEvent]:
    """Reschedules of every ``step``-th booking, newer than anything in ``workload``."""
    return [
        event("BookingConfirmed", f"bk_{i:04d}", 10, scheduled_start=START + timedelta(hours=2))
        for i in range(0, bookings, step)
    ]


def report(case: str, **figures: Any) -> None:
    """Print one case's FAULT FIGURES line as JSON (seen with -s)."""
    print(f"\nFAULT FIGURES {case}: {json.dumps(figures, default=str)}")


async def all_answer_ready(*runs: Watched) -> bool:
    """True when each run's latest probe said 200 to /readyz and /healthz; AssertionError otherwise."""
    for run in runs:
        latest = run.probes[-1] if run.probes else None
        assert latest is not None and latest.ready == 200 and latest.alive == 200, (
            f"port {run.port}: {latest.readiness if latest else 'no answer'}"
        )
    return True


async def lift_and_recover(
    proxy: Proxy, toxics: list[str], database_url: str, events: list[BookingEvent], *runs: Watched
) -> tuple[float, float]:
    """End the fault; wait until every event is applied and published and every process ready and alive again.
    Returns when the fault was lifted (monotonic) and how long the work took to complete after it."""
    for name in toxics:
        proxy.remove(name)
    lifted = time.monotonic()
    await all_applied_and_published(database_url, events, timeout_s=HANG_S)
    recovered_s = time.monotonic() - lifted
    await eventually(lambda: all_answer_ready(*runs), what="ready and alive again", timeout_s=HANG_S)
    assert all(run.process.returncode is None for run in runs), "a process ended"
    return lifted, recovered_s


async def logged(run: Watched, event_name: bytes) -> bool:
    """True once a line of the run's stderr holds ``event_name``."""
    return any(event_name in line for line in run.stderr)
