"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, served by aiohttp on an event loop of its own thread.

Why aiohttp, in its own thread: a well-kept asyncio server, so a held connection costs a socket and a few KiB,
not a thread; it closes a connection that sends nothing (or half a request) within its keep-alive timeout; and on
its own loop, a flood of connections never queues behind a batch on the service's loop, nor a batch behind it.
Every answer comes from memory: the health verdict (booking_sessions/observe/health.py) and the metrics registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from booking_sessions.observe.health import Health
from models.errors import ConfigurationError

log = structlog.get_logger(__name__)

# A rebalance normally takes a few seconds; only one that lasts is worth taking the instance out of rotation.
REBALANCE_GRACE_S = 60.0
# A connection idle (or half-sent) for this long is closed: a probe or a scrape takes milliseconds.
KEEPALIVE_TIMEOUT_S = 5.0
# Open connections at most; more are closed at once. Probes and scrapes need a handful.
MAX_CONNECTIONS = 1000
START_TIMEOUT_S = 10.0

PATHS = ("/metrics", "/healthz", "/readyz")

GroupState = Literal["joining", "assigned", "rebalancing"]


class GroupMembership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """The consumer's standing in its group, as the rebalance callbacks tell it."""

    def __init__(self) -> None:
        self.state: GroupState = "joining"
        self.partitions = 0
        self.changed_at = time.monotonic()

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """aiokafka's callback: a rebalance began (an assigned member is now rebalancing)."""
        if self.state == "assigned":
            self.state, self.changed_at = "rebalancing", time.monotonic()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """aiokafka's callback: the rebalance ended with ``assigned`` (possibly none) for this member."""
        # An empty assignment is still membership: more instances than partitions, this one waits.
        self.state, self.partitions, self.changed_at = "assigned", len(set(assigned)), time.monotonic()
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

    def check(self) -> dict[str, Any]:
        """For readiness (booking_sessions.observe.health): ``ok`` while assigned, or rebalancing for less than
        REBALANCE_GRACE_S; with ``state``, the number of ``partitions`` and ``since_s`` (seconds in this state)."""
        since_s = time.monotonic() - self.changed_at
        ok = self.state == "assigned" or (self.state == "rebalancing" and since_s < REBALANCE_GRACE_S)
        return {"ok": ok, "state": self.state, "partitions": self.partitions, "since_s": round(since_s, 1)}


class _CappedServer(web.Server):
    """aiohttp's low-level server with a cap on open connections (aiohttp has no setting for one)."""

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            transport.abort()
        super().connection_made(handler, transport)


class HttpServer:
    """The endpoints on ``host:port`` (port 0: any free one, ``port`` then says which), in a thread of their own."""

    def __init__(self, registry: CollectorRegistry, health: Health | None) -> None:
        self._registry = registry
        # None while the service starts: /healthz answers 200 and /readyz 503, both {"status": "starting"}. Set
        # from the service's thread once it started; the HTTP thread reads it per request.
        self.health = health
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """``/metrics`` (Prometheus or OpenMetrics text, as the Accept header asks), ``/healthz`` and ``/readyz``
        (JSON; 200 or 503), anything else 404."""
        if request.path == "/metrics":
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})
        if request.path in ("/healthz", "/readyz"):
            health = self.health
            if health is None:
                ok, body = request.path == "/healthz", {"status": "starting"}
            elif request.path == "/healthz":
                ok, body = health.liveness()
            else:
                ok, body = health.readiness()
            return _json(200 if ok else 503, body)
        return _json(404, {"error": "not found", "paths": list(PATHS)})

    def start(self, host: str, port: int) -> None:
        """Serve on ``host:port`` from a thread of its own; returns once it listens. Raises ConfigurationError when
        it does not start within START_TIMEOUT_S or the port cannot be bound (saying what to set)."""
        self._thread = threading.Thread(target=self._serve, args=(host, port), name="http-endpoints", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise ConfigurationError(f"the HTTP server on {host}:{port} did not start within {START_TIMEOUT_S} s")
        if isinstance(self._error, OSError):
            raise ConfigurationError(
                f"cannot serve /metrics on {host}:{port} ({self._error.strerror or self._error}): set "
                "BOOKING_METRICS_PORT to a free port, or 0 to turn the server off"
            ) from None
        if self._error is not None:
            raise self._error

    def _serve(self, host: str, port: int) -> None:
        try:
            asyncio.run(self._main(host, port))
        except BaseException as error:  # reported by start(); a thread's exception would only be printed
            self._error = error
        finally:
            self._started.set()

    async def _main(self, host: str, port: int) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = _CappedServer(self.handle, keepalive_timeout=KEEPALIVE_TIMEOUT_S, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=128)
            await site.start()
            self.port = runner.addresses[0][1]
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Stop serving and free the port (waits up to 5 s for the thread)."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


@contextlib.contextmanager
def serving(registry: CollectorRegistry, health: Health | None, host: str, port: int) -> Iterator[HttpServer]:
    """The server runs inside the block and is stopped, its port freed, after it."""
    server = HttpServer(registry, health)
    server.start(host, port)
    log.info("http_serving", host=host, port=server.port, paths=list(PATHS))
    try:
        yield server
    finally:
        server.stop()
