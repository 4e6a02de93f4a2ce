"""The HTTP endpoints' server (booking_sessions/observe/http.py) on its own thread: answers from memory, capped."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from booking_sessions.observe import http
from booking_sessions.observe.http import serving


class FakeHealth:
    def liveness(self) -> tuple[bool, dict[str, Any]]:
        return False, {"status": "stalled", "stalled": {"relay": "3 waiting, no progress for 130 s"}}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return True, {"status": "ready", "checks": {}}


def fetch(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_answers_from_memory() -> None:
    registry = CollectorRegistry()
    Counter("demo_things", "Things", registry=registry).inc(3)
    with serving(registry, FakeHealth(), "127.0.0.1", 0) as server:  # type: ignore[arg-type]
        assert fetch(server.port, "/healthz") == (
            503,
            b'{"status": "stalled", "stalled": {"relay": "3 waiting, no progress for 130 s"}}',
        )
        assert fetch(server.port, "/readyz") == (200, b'{"status": "ready", "checks": {}}')
        status, metrics = fetch(server.port, "/metrics")
        assert status == 200 and b"demo_things_total 3.0" in metrics
        assert fetch(server.port, "/nope")[0] == 404


def test_connections_over_the_cap_are_closed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 3)
    with serving(CollectorRegistry(), None, "127.0.0.1", 0) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(100) == b""  # closed without an answer
        except ConnectionResetError:
            pass  # aborted: the same refusal
        finally:
            for sock in [*held, extra]:
                sock.close()


def test_a_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(Exception, match="BOOKING_METRICS_PORT"):
            http.HttpServer(CollectorRegistry(), None).start("127.0.0.1", taken.getsockname()[1])
