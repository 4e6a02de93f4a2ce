"""Two service instances in one group, each relaying the shards of its partitions, across two rebalances (one
joins, then the other leaves): every booking's SessionCreated and SessionUpdated messages come out in order, each
at least once with its message_id, and both instances' relays published."""

from __future__ import annotations

import asyncio
import contextlib

from booking_sessions.service import Service, run_until
from booking_sessions.settings import Settings
from tests.integration.bookings import event
from tests.integration.harness import Produced, publish, query, service
from tests.integration.relay_checks import check_output
from tests.waiting import eventually

BOOKINGS = [f"bk_{i:03d}" for i in range(60)]


class Instance:
    """One ``run`` of the service, in this process, that can be stopped on its own (leaving the group)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.service: Service | None = None

    async def start(self) -> Service:
        self.service = await self._stack.enter_async_context(service(self._settings))
        self._task = asyncio.create_task(run_until(self.service, self._stop))
        return self.service

    async def stop(self) -> None:
        self._stop.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            await self._stack.aclose()


async def wave(settings: Settings, database_url: str, round_: int) -> None:
    """Round 0 approves every booking (a SessionCreated each), later rounds move it (a SessionUpdated each); waits
    until the group applied the round and every outbox row so far is published."""
    kind = "BookingApproved" if round_ == 0 else "BookingConfirmed"
    await publish(settings, [event(kind, b, round_, title=f"round {round_}") for b in BOOKINGS], Produced())

    async def relayed() -> bool:
        [row] = await query(
            database_url,
            "SELECT count(*) AS n, count(*) FILTER (WHERE published_at IS NULL) AS waiting FROM outbox_messages",
        )
        assert row == {"n": len(BOOKINGS) * (round_ + 1), "waiting": 0}, f"outbox rows: {row}"
        return True

    await eventually(relayed, what=f"round {round_} applied and relayed", timeout_s=90, interval_s=0.1)


async def test_two_instances_relay_their_shards_in_order_across_rebalances(
    settings: Settings, database_url: str
) -> None:
    first, second = Instance(settings), Instance(settings)
    try:
        a = await first.start()
        await wave(settings, database_url, 0)  # the first instance alone: every partition, every shard

        b = await second.start()  # joins: the group rebalances, half of the partitions and shards move

        async def shared() -> bool:
            assignments = sorted(len(s.consumer.assignment()) for s in (a, b))
            assert assignments == [6, 6], f"assignments {assignments}"
            return True

        await eventually(shared, what="the group to share the 12 partitions", timeout_s=60)
        published_before = (a.relay.published, b.relay.published)
        await wave(settings, database_url, 1)
        await wave(settings, database_url, 2)
        relayed_while_shared = (a.relay.published - published_before[0], b.relay.published - published_before[1])

        await first.stop()  # leaves: the second instance gets every partition and shard
        await wave(settings, database_url, 3)
    finally:
        with contextlib.suppress(Exception):
            await first.stop()
        await second.stop()

    # Both relayed while the group was shared (the rows of the first rounds are in both halves' shards).
    assert all(n > 0 for n in relayed_while_shared), relayed_while_shared
    counts = await check_output(settings, database_url)
    assert counts["rows"] == 4 * len(BOOKINGS)
    assert counts["unpublished"] == 0
