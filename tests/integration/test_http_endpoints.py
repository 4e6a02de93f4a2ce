"""The HTTP port holds (issue 16, 2): half-sent requests cost neither the consumer nor /healthz, and are closed."""

from __future__ import annotations

import asyncio
import threading
import time

from booking_sessions.observe.http import KEEPALIVE_TIMEOUT_S
from booking_sessions.settings import Settings
from tests.integration.harness import Produced, publish
from tests.integration.http_probes import get, running
from tests.integration.workloads import all_applied_and_published, workload

SLOW_CLIENTS = 300


async def test_many_half_sent_requests_leave_the_consumer_and_healthz_unaffected(
    settings: Settings, database_url: str
) -> None:
    events = workload(100)
    fast = settings.model_copy(update={"metrics_refresh_s": 0.2})
    async with running(fast) as run:
        port = int(run.base_url.rpartition(":")[2])
        threads_before = threading.active_count()
        held = []
        for _ in range(SLOW_CLIENTS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")  # never the blank line that ends it
            await writer.drain()
            held.append((reader, writer))
        opened = time.monotonic()

        started = time.monotonic()
        status, body = await get(f"{run.base_url}/healthz")
        healthz_s = time.monotonic() - started
        assert (status, body) == (200, b'{"status": "ok"}')
        assert healthz_s < 1.0, f"/healthz took {healthz_s:.2f} s behind {SLOW_CLIENTS} slow clients"
        assert threading.active_count() - threads_before < 5  # no thread per connection

        await publish(settings, events, Produced())
        await all_applied_and_published(database_url, events, timeout_s=60)
        applied_s = time.monotonic() - opened

        async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
            return await reader.read()  # EOF once the server gave up on the half-sent request

        leftovers = await asyncio.wait_for(
            asyncio.gather(*(closed_by_server(r) for r, _ in held)), timeout=KEEPALIVE_TIMEOUT_S + 15
        )
        closed_s = time.monotonic() - opened
        for _, writer in held:
            writer.close()
        assert all(b"200 OK" not in answer for answer in leftovers)  # none was answered as if complete
    print(
        f"\nHTTP FIGURES: {SLOW_CLIENTS} half-sent requests held; /healthz in {healthz_s * 1000:.0f} ms; "
        f"{len(events)} events applied and published in {applied_s:.1f} s meanwhile; all closed by the server "
        f"within {closed_s:.1f} s"
    )
