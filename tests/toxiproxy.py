"""Toxiproxy, the fault-injecting TCP proxy of the fault tests (github.com/Shopify/toxiproxy/v2, built from source by
``.ci/run`` with the machine's Go): its server found and started here, its REST API spoken with the standard library.

Where the server binary is looked for, first found wins: ``$TOXIPROXY_SERVER``; ``.cache/toxiproxy/VERSION/server``
(what ``.ci/run`` builds); ``toxiproxy-server`` on the PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from booking_sessions.dev.embedded import ServerError, free_port, stop_process

VERSION = "v2.5.0"  # also in .ci/run
CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache"
START_TIMEOUT_S = 15.0


def server_binary() -> Path | None:
    """The toxiproxy server to run, or None (the caller says how to get one)."""
    candidates = [
        os.environ.get("TOXIPROXY_SERVER"),
        str(CACHE_DIR / "toxiproxy" / VERSION / "server"),
        shutil.which("toxiproxy-server"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


HOW_TO_GET_IT = (
    f"no toxiproxy server: build it with `GOBIN=$PWD/.cache/toxiproxy/{VERSION} "
    f"go install github.com/Shopify/toxiproxy/v2/cmd/server@{VERSION}` (.ci/run does), or set TOXIPROXY_SERVER"
)


@dataclass
class Proxy:
    """One proxied route: clients connect to ``listen_port``, the proxy connects on to ``upstream``."""

    api: Toxiproxy
    name: str
    listen_port: int
    upstream: str

    def add(self, toxic: str, *, name: str | None = None, stream: str = "downstream", **attributes: Any) -> str:
        """Add a toxic (``timeout``, ``latency``, ``reset_peer``, ...) to every connection, open or new; its name."""
        toxic_name = name or f"{toxic}_{stream}"
        body = {"name": toxic_name, "type": toxic, "stream": stream, "toxicity": 1.0, "attributes": attributes}
        self.api.call("POST", f"/proxies/{self.name}/toxics", body)
        return toxic_name

    def remove(self, toxic_name: str) -> None:
        self.api.call("DELETE", f"/proxies/{self.name}/toxics/{toxic_name}")

    def silence(self) -> list[str]:
        """Nothing passes either way and nothing is closed: a peer that stopped answering (timeout=0)."""
        return [self.add("timeout", stream=stream, timeout=0) for stream in ("upstream", "downstream")]

    @contextlib.contextmanager
    def toxic(self, toxic: str, *, stream: str = "downstream", **attributes: Any) -> Iterator[None]:
        name = self.add(toxic, stream=stream, **attributes)
        try:
            yield
        finally:
            self.remove(name)


class Toxiproxy:
    """A toxiproxy server on 127.0.0.1 with its API on a free port."""

    def __init__(self, process: subprocess.Popen[bytes], api_port: int) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{api_port}"

    @classmethod
    @contextlib.contextmanager
    def running(cls, binary: Path) -> Iterator[Toxiproxy]:
        api_port = free_port()
        process = subprocess.Popen(
            [str(binary), "-host", "127.0.0.1", "-port", str(api_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        proxy = cls(process, api_port)
        try:
            proxy._wait_ready()
            yield proxy
        finally:
            stop_process(process, 5.0)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.call("GET", "/version")
                return
            except (OSError, urllib.error.URLError) as error:
                if self.process.poll() is not None:
                    raise ServerError(f"toxiproxy exited with {self.process.returncode}") from error
                if time.monotonic() > deadline:
                    raise ServerError(f"toxiproxy API at {self.base} not answering after {START_TIMEOUT_S}s") from error
                time.sleep(0.05)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            payload = response.read()
        if response.headers.get_content_type() != "application/json":  # /version answers plain text
            return payload.decode()
        return json.loads(payload) if payload.strip() else None

    def proxy(self, name: str, upstream: str, listen_port: int | None = None) -> Proxy:
        """A new proxy to ``upstream`` (host:port), listening on ``listen_port`` or a free one."""
        port = listen_port or free_port()
        body = {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream, "enabled": True}
        self.call("POST", "/proxies", body)
        return Proxy(self, name, port, upstream)

    def delete(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.call("DELETE", f"/proxies/{name}")
