"""Sharded relays (producer/relay.py, producer/shards.py): PostgreSQL computes the shards as Python does; two
relays publish their own shards at once; a zombie relay never sends a shard beside its new owner, and one that comes
back after losing its session only repeats copies: every booking's messages in order, at least once, with ids."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import text

from booking_sessions.settings import Settings
from models.faults import is_transient
from models.records import OutgoingRecord
from producer.relay import RELAY_LOCK, SHARD_LOCK_CLASS, OutboxRelay, Shards
from producer.shards import ALL_SHARDS, shard_of, shards_for
from tests.integration.harness import execute, query
from tests.integration.relay_checks import HeldPublisher, check_output, publisher_and_engines, write_rows

BOOKINGS = [f"bk_{i:03d}" for i in range(60)]


def owning(shards: frozenset[int]) -> Shards:
    return lambda: shards


async def test_postgres_computes_the_shard_python_computes(database_url: str) -> None:
    keys = [*BOOKINGS, "bk_\u00e9t\u00e9", "x", "a:b.c-d_e", "k" * 64]
    rows = await query(
        database_url, "SELECT k, outbox_shard(k) AS s FROM unnest(CAST(:keys AS text[])) AS k", keys=keys
    )
    assert {r["k"]: r["s"] for r in rows} == {k: shard_of(k) for k in keys}


async def test_two_relays_publish_their_own_shards_at_once(settings: Settings, database_url: str) -> None:
    for round_ in range(3):
        await write_rows(database_url, settings.output_topic, BOOKINGS, round_)
    halves = shards_for(range(6), 12), shards_for(range(6, 12), 12)
    async with publisher_and_engines(settings, 2) as (publisher, engines):
        relays = [
            OutboxRelay(engine, publisher, batch_rows=20, shards=owning(half))
            for engine, half in zip(engines, halves, strict=True)
        ]
        sent = await asyncio.gather(*(relay.drain() for relay in relays))
    assert sum(sent) == 3 * len(BOOKINGS)
    assert all(any(shard_of(b) in half for b in BOOKINGS) for half in halves)  # both halves have rows
    # Both sent (each its own shards, and the other's that no step held once its own were done).
    assert all(relay.published > 0 for relay in relays), [relay.published for relay in relays]
    counts = await check_output(settings, database_url)
    assert counts == {"rows": 180, "records": 180, "copies": 0, "unpublished": 0}


async def test_a_zombie_holding_its_shards_keeps_the_new_owner_out_until_its_step_ends(
    settings: Settings, database_url: str
) -> None:
    await write_rows(database_url, settings.output_topic, BOOKINGS, 0)
    async with publisher_and_engines(settings, 2) as (publisher, (zombie_engine, owner_engine)):
        held = HeldPublisher(publisher)
        # The zombie lost its partitions during the step it is in; the new owner now owns every shard.
        zombie = OutboxRelay(zombie_engine, held, batch_rows=1000, shards=lambda: ALL_SHARDS)
        owner = OutboxRelay(owner_engine, publisher, batch_rows=1000, shards=lambda: ALL_SHARDS)
        stalled = asyncio.create_task(zombie.run_once())
        await asyncio.wait_for(held.entered.wait(), timeout=20)
        await write_rows(database_url, settings.output_topic, BOOKINGS, 1)  # later rows of the same bookings

        assert await owner.run_once() == 0  # every shard is the zombie's until its step ends: no overtaking

        held.release.set()
        assert await asyncio.wait_for(stalled, timeout=30) == len(BOOKINGS)
        assert await owner.drain() == len(BOOKINGS)
    counts = await check_output(settings, database_url)
    assert counts == {"rows": 120, "records": 120, "copies": 0, "unpublished": 0}


async def test_a_zombie_back_after_losing_its_session_only_repeats_copies(
    settings: Settings, database_url: str
) -> None:
    await write_rows(database_url, settings.output_topic, BOOKINGS, 0)
    async with publisher_and_engines(settings, 2) as (publisher, (zombie_engine, owner_engine)):
        held = HeldPublisher(publisher)
        zombie = OutboxRelay(zombie_engine, held, batch_rows=1000, shards=lambda: ALL_SHARDS)
        owner = OutboxRelay(owner_engine, publisher, batch_rows=1000, shards=lambda: ALL_SHARDS)
        stalled = asyncio.create_task(zombie.run_once())
        await asyncio.wait_for(held.entered.wait(), timeout=20)
        # PostgreSQL ends the stalled session, as idle_in_transaction_session_timeout or keepalives would: its
        # shard locks go with it.
        ended = await execute(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND classid = CAST(:c AS oid) AND objsubid = 2 AND granted"
            " GROUP BY pid",
            c=SHARD_LOCK_CLASS,
        )
        assert ended == 1
        await write_rows(database_url, settings.output_topic, BOOKINGS, 1)
        assert await owner.drain() == 2 * len(BOOKINGS)  # the new owner sends everything, in order

        held.release.set()  # the zombie comes back and sends what it had read: copies of published rows
        with pytest.raises(Exception) as lost:
            await asyncio.wait_for(stalled, timeout=30)
        assert is_transient(lost.value), repr(lost.value)  # its marking fails: its session is gone
    counts = await check_output(settings, database_url, extra=len(BOOKINGS))
    assert counts == {"rows": 120, "records": 180, "copies": 60, "unpublished": 0}


class NeverSends:
    async def send_batched(self, records: Sequence[OutgoingRecord]) -> None:
        raise AssertionError(f"a relay step sent {len(records)} records past an exclusive RELAY_LOCK")


async def test_no_step_runs_while_republish_or_the_previous_release_holds_the_fleet_lock(
    settings: Settings, database_url: str
) -> None:
    """``outbox republish`` and the previous release's relay take RELAY_LOCK exclusively; each step of this release
    takes it shared, so none runs beside them (republish's reset stays atomic against every relay)."""
    await write_rows(database_url, settings.output_topic, BOOKINGS[:3], 0)
    async with publisher_and_engines(settings, 2) as (_, (holder, relays)), holder.begin() as republish:
        await republish.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RELAY_LOCK})
        assert await OutboxRelay(relays, NeverSends(), batch_rows=10).run_once() == 0


async def test_a_relay_sends_its_own_shards_first_then_helps_with_the_rest(
    settings: Settings, database_url: str
) -> None:
    for round_ in range(2):
        await write_rows(database_url, settings.output_topic, BOOKINGS, round_)
    own = frozenset({shard_of(BOOKINGS[0])})  # one shard: read through the (shard, id) index
    theirs = [b for b in BOOKINGS if shard_of(b) in own]
    async with publisher_and_engines(settings, 1) as (publisher, (engine,)):
        relay = OutboxRelay(engine, publisher, batch_rows=1000, shards=owning(own), sweep_s=3600)
        assert await relay.run_once() == 2 * len(theirs)  # its own shard only: rows there were waiting
        assert await relay.run_once() == 2 * (len(BOOKINGS) - len(theirs))  # nothing of its own: every other shard
        assert await relay.run_once() == 0
    counts = await check_output(settings, database_url)
    assert counts == {"rows": 120, "records": 120, "copies": 0, "unpublished": 0}


async def test_relays_contending_for_every_shard_send_each_row_once(settings: Settings, database_url: str) -> None:
    """Four relays that all want every shard, in small steps: a relay that gets a shard's lock right after another
    relay's step committed must see that step's rows as published (its rows are read after its locks are taken)."""
    for round_ in range(5):
        await write_rows(database_url, settings.output_topic, BOOKINGS, round_)
    async with publisher_and_engines(settings, 4) as (publisher, engines):
        relays = [OutboxRelay(engine, publisher, batch_rows=10, shards=owning(ALL_SHARDS)) for engine in engines]
        sent = await asyncio.gather(*(relay.drain() for relay in relays))
    assert sum(sent) == 5 * len(BOOKINGS), sent  # more: some rows were sent twice
    counts = await check_output(settings, database_url)
    assert counts == {"rows": 300, "records": 300, "copies": 0, "unpublished": 0}
