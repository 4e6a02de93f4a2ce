"""Whether a Kafka broker answers, and waiting until it does: for every rung that starts one (Apache, containers)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from booking_sessions.dev.embedded import ServerError

KAFKA_READY_TIMEOUT_S = 60.0


def kafka_answers(bootstrap: str) -> bool:
    """True when the broker answers a metadata request naming at least one broker."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        # A plain connect first: aiokafka logs an error for every refused connection.
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            return bool((await admin.describe_cluster())["brokers"])
        except KafkaError:
            return False
        finally:
            await admin.close()

    # Its own thread and loop: callers may be inside a running event loop (async fixtures).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()


def wait_kafka_ready(bootstrap: str, timeout_s: float, failed: Callable[[], str | None]) -> None:
    """Poll until the broker answers; ``failed()`` returns why waiting is pointless (e.g. the process exited)."""
    deadline = time.monotonic() + timeout_s
    while not kafka_answers(bootstrap):
        reason = failed()
        if reason is not None:
            raise ServerError(reason)
        if time.monotonic() > deadline:
            raise ServerError(f"no Kafka broker answers at {bootstrap} after {timeout_s}s")
        time.sleep(0.2)
