"""``/metrics``, ``/healthz`` and ``/readyz`` on one port: prometheus-client's WSGI app and the standard library.

The server runs in its own threads, so a scrape never waits for a batch; the readiness checks that need the
database run on the service's event loop, each bounded by a short timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import structlog
from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.logs import redact
from models.errors import ConfigurationError

log = structlog.get_logger(__name__)

DATABASE_TIMEOUT_S = 2.0
# A rebalance normally takes a few seconds; only one that lasts is worth taking the instance out of rotation.
REBALANCE_GRACE_S = 60.0

PATHS = ("/metrics", "/healthz", "/readyz")

GroupState = Literal["joining", "assigned", "rebalancing"]


class GroupMembership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """The consumer's standing in its group, as the rebalance callbacks tell it."""

    def __init__(self) -> None:
        self.state: GroupState = "joining"
        self.partitions = 0
        self.changed_at = time.monotonic()

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        if self.state == "assigned":
            self.state, self.changed_at = "rebalancing", time.monotonic()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # An empty assignment is still membership: more instances than partitions, this one waits.
        self.state, self.partitions, self.changed_at = "assigned", len(set(assigned)), time.monotonic()
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

    def check(self) -> dict[str, Any]:
        since_s = time.monotonic() - self.changed_at
        ok = self.state == "assigned" or (self.state == "rebalancing" and since_s < REBALANCE_GRACE_S)
        return {"ok": ok, "state": self.state, "partitions": self.partitions, "since_s": round(since_s, 1)}


@dataclass
class Readiness:
    """Ready: the group joined (partitions assigned, or none to spare), the database answers, the relay moves."""

    engine: AsyncEngine
    group: GroupMembership
    relay_progress_at: Callable[[], float]  # time.monotonic() of the relay's last step that ended without error
    relay_stuck_after_s: float
    loop: asyncio.AbstractEventLoop

    def check(self) -> tuple[bool, dict[str, Any]]:
        """Called from the HTTP server's thread."""
        relay_idle_s = time.monotonic() - self.relay_progress_at()
        checks = {
            "database": self._database(),
            "kafka_group": self.group.check(),
            "relay": {
                "ok": relay_idle_s < self.relay_stuck_after_s,
                "since_progress_s": round(relay_idle_s, 1),
                "stuck_after_s": self.relay_stuck_after_s,
            },
        }
        ready = all(check["ok"] for check in checks.values())
        return ready, {"status": "ready" if ready else "not_ready", "checks": checks}

    def _database(self) -> dict[str, Any]:
        future = asyncio.run_coroutine_threadsafe(self._ping(), self.loop)
        try:
            future.result(timeout=DATABASE_TIMEOUT_S + 0.5)  # the margin: the loop may be busy with a batch
        except Exception as error:
            future.cancel()
            reason = "timeout" if isinstance(error, TimeoutError) else _first_line(error)
            return {"ok": False, "error": redact(reason)}
        return {"ok": True}

    async def _ping(self) -> None:
        async with asyncio.timeout(DATABASE_TIMEOUT_S), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds: not worth a log line each."""


class HttpServer:
    """The WSGI app and its server thread; ``port`` is the bound one (useful when asked for port 0)."""

    def __init__(self, registry: CollectorRegistry, readiness: Readiness | None) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._readiness = readiness
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            if self._readiness is None:
                return _json(start_response, "503 Service Unavailable", {"status": "not_ready", "checks": {}})
            ready, body = self._readiness.check()
            return _json(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        return _json(start_response, "404 Not Found", {"error": "not found", "paths": list(PATHS)})

    def start(self, host: str, port: int) -> None:
        try:
            self._server = make_server(host, port, self.app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as error:
            raise ConfigurationError(
                f"cannot serve /metrics on {host}:{port} ({error.strerror or error}): set BOOKING_METRICS_PORT "
                "to a free port, or 0 to turn the server off"
            ) from None
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


@contextlib.contextmanager
def serving(registry: CollectorRegistry, readiness: Readiness | None, host: str, port: int) -> Iterator[HttpServer]:
    """The server runs inside the block and is stopped, its port freed, after it."""
    server = HttpServer(registry, readiness)
    server.start(host, port)
    log.info("http_serving", host=host, port=server.port, paths=list(PATHS))
    try:
        yield server
    finally:
        server.stop()
