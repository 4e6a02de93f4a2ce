"""Helpers of the relay shard tests: outbox rows written directly, a publisher that can be held mid-step, and the
check that every booking's messages came out in order, each at least once, with its message_id."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from booking_sessions.settings import Settings
from models.records import OutgoingRecord
from producer.publish import Publisher
from tests.integration.harness import query, read_json

_INSERT = text(
    """
    INSERT INTO outbox_messages (message_id, topic, key, payload)
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:p AS text[]))
    """
)


async def write_rows(database_url: str, topic: str, bookings: Sequence[str], round_: int) -> int:
    """One outbox row per booking, as a writer would commit it (payload: the booking and the round)."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                _INSERT,
                {
                    "ids": [uuid.uuid4() for _ in bookings],
                    "topics": [topic] * len(bookings),
                    "keys": list(bookings),
                    "p": [json.dumps({"booking_id": b, "round": round_}) for b in bookings],
                },
            )
    finally:
        await engine.dispose()
    return len(bookings)


class HeldPublisher:
    """Sends through ``inner``, but each ``send_batched`` first waits until ``release`` is set: a relay stalled in
    the middle of its step, its rows read and its shard locks held."""

    def __init__(self, inner: Publisher) -> None:
        self._inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send_batched(self, records: Sequence[OutgoingRecord]) -> None:
        self.entered.set()
        await self.release.wait()
        await self._inner.send_batched(records)


@asynccontextmanager
async def publisher_and_engines(settings: Settings, count: int) -> AsyncIterator[tuple[Publisher, list[AsyncEngine]]]:
    """One publisher and ``count`` engines (one per relay: each its own connections, as separate instances)."""
    assert settings.kafka_bootstrap is not None
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="test-relay")
    engines = [create_async_engine(settings.database_url_value(), poolclass=NullPool) for _ in range(count)]
    try:
        yield publisher, engines
    finally:
        await publisher.stop()
        for engine in engines:
            await engine.dispose()


async def expected_order(database_url: str) -> dict[str, list[str]]:
    """Every booking's message ids in outbox id order: the order the contract promises downstream."""
    rows = await query(database_url, "SELECT key, message_id FROM outbox_messages ORDER BY id")
    order: dict[str, list[str]] = {}
    for row in rows:
        order.setdefault(row["key"], []).append(str(row["message_id"]))
    return order


async def check_output(settings: Settings, database_url: str, *, extra: int = 0) -> dict[str, Any]:
    """Read the output topic back and assert, per booking, that the first copies of its messages came in outbox id
    order, every one of them, each with its message_id header. Returns the counts (``copies``: repeats seen)."""
    order = await expected_order(database_url)
    total = sum(len(ids) for ids in order.values())
    records = await read_json(settings, settings.output_topic, total + extra)
    arrived: dict[str, list[str]] = {}
    for record in records:  # one booking's records share a partition: this list holds them in offset order
        headers = dict(record["headers"])
        arrived.setdefault(record["key"].decode(), []).append(headers["message_id"].decode())
    copies = 0
    for booking, ids in order.items():
        seen = arrived.get(booking, [])
        first = list(dict.fromkeys(seen))
        assert first == ids, f"{booking}: first copies {first} != outbox order {ids}"
        copies += len(seen) - len(first)
    unknown = set(arrived) - set(order)
    assert not unknown, f"records of bookings never written: {sorted(unknown)[:5]}"
    [unpublished] = await query(database_url, "SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL")
    return {"rows": total, "records": len(records), "copies": copies, "unpublished": unpublished["n"]}
