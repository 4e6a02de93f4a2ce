"""Redelivery: a crash before the offset commit, a restart, a replay under a new group. Nothing changes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from booking_sessions.service import Service
from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from consumer.client import to_record
from consumer.ids import session_created_id, session_id
from consumer.results import BatchResult
from models.events import BookingEvent
from models.records import Record
from tests.integration.bookings import event
from tests.integration.harness import Produced, consume_all, publish, read_json, service, snapshot


class InjectedCrash(RuntimeError):
    """Stands for the process dying after the database commit and before the offset commit."""


def bookings(n: int) -> list[str]:
    return [f"bk_{i:03d}" for i in range(n)]


def stream(n: int) -> list[BookingEvent]:
    events = []
    for booking in bookings(n):
        events += [event("BookingApproved", booking, 0), event("BookingConfirmed", booking, 1)]
    return events


async def applied_and_read_back(settings: Settings, svc: Service, events: list[BookingEvent]) -> list[Record]:
    """``events`` published and applied by ``svc``; returns their records as the consume loop reads them."""
    produced = Produced()
    await publish(settings, events, produced)
    await consume_all(svc, produced)
    assert settings.kafka_bootstrap is not None
    messages = await read_topic(settings.kafka_bootstrap, settings.input_topic, expected=len(events))
    return [to_record(m) for m in messages]


async def test_crash_between_database_commit_and_offset_commit_changes_nothing_on_redelivery(
    settings: Settings, database_url: str
) -> None:
    produced = Produced()
    await publish(settings, stream(20), produced)

    async def crash(result: BatchResult) -> None:
        raise InjectedCrash(f"after committing {result.records} records to the database")

    async with service(settings, before_offset_commit=crash) as svc:
        with pytest.raises(InjectedCrash):
            await consume_all(svc, produced)
    before = await snapshot(database_url)
    assert before["sessions"], "the crashed batch's transaction should have committed"
    assert before["inbox"], "the crashed batch's transaction should have committed"

    # A new process of the same group: the uncommitted offsets deliver the same batch again.
    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()
    after = await snapshot(database_url)

    crashed_ids = {row["message_id"] for row in before["inbox"]}
    for name in ("sessions", "participants", "reservations", "outbox"):
        assert [r for r in after[name] if r in before[name]] == before[name], f"{name} rows changed"
    assert [r for r in after["inbox"] if r["message_id"] in crashed_ids] == before["inbox"]
    assert len(after["sessions"]) == 20 and len(after["inbox"]) == 40
    messages = await read_json(settings, settings.output_topic, 20)
    created = sorted(m["body"]["message_id"] for m in messages)
    assert created == sorted(str(session_created_id(session_id(b))) for b in bookings(20))


async def test_restart_without_offset_commit_redelivers_and_changes_nothing(
    settings: Settings, database_url: str
) -> None:
    produced = Produced()
    await publish(settings, stream(10), produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
        await svc.relay.drain()
    before = await snapshot(database_url)
    assert len(before["sessions"]) == 10

    # Offsets lost (a new group id stands for a group whose commits never happened): everything again.
    replay = settings.model_copy(update={"group_id": settings.group_id + ".again"})
    async with service(replay) as svc:
        committed = await consume_all(svc, produced)
        await svc.relay.drain()

    assert committed == produced.ends
    assert await snapshot(database_url) == before
    messages = await read_json(settings, settings.output_topic, 10)
    assert len(messages) == 10  # the relay sent nothing new: no new SessionCreated id, not even a copy


async def test_after_a_batch_of_repeats_exact_repeats_are_found_without_decoding(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumer.batch
    import consumer.decode

    events = stream(10)
    async with service(settings) as svc:
        records = await applied_and_read_back(settings, svc, events)
        before = await snapshot(database_url)
        decoded = Counter[str]()
        real_decode = consumer.decode.decode

        def counting_decode(*args: Any) -> Any:
            decoded["calls"] += 1
            return real_decode(*args)

        monkeypatch.setattr(consumer.batch, "decode", counting_decode)
        processor = svc.loop.processor
        first = await processor.process(records)  # a run of repeats: decoded, then found in the inbox
        calls_first = decoded["calls"]
        second = await processor.process(records)  # now looked up by (message id, sha256) before decoding

    assert (first.records, first.duplicates, first.applied) == (len(events), len(events), 0)
    assert calls_first == len(events)
    assert (second.records, second.duplicates, second.applied) == (len(events), len(events), 0)
    assert decoded["calls"] == calls_first  # not one decode in the second pass
    assert second.next_offsets == first.next_offsets
    assert await snapshot(database_url) == before


async def test_after_a_batch_of_repeats_a_copy_the_client_could_not_read_or_over_a_bound_is_still_dead_lettered(
    settings: Settings, database_url: str
) -> None:
    # A newcomer's find: after a batch of repeats the shortcut took any record whose value bytes the inbox held
    # for a repeat, and dropped three copies that decode dead-letters (a header name not UTF-8, 65 headers, a key
    # over 1 KiB) without a dead letter or an inbox row.
    async with service(settings) as svc:
        records = await applied_and_read_back(settings, svc, stream(5))
        processor = svc.loop.processor
        await processor.process(records)  # a run of repeats: the shortcut is on for the next batch
        last = records[-1].offset
        copies = [
            records[0]._replace(offset=last + 1, unreadable="header 1: name is not UTF-8"),
            records[1]._replace(offset=last + 2, headers=tuple((f"h{i}", b"v") for i in range(65))),
            records[2]._replace(offset=last + 3, key=b"k" * 2000),
            records[3]._replace(offset=last + 4),  # a plain copy: still a duplicate
        ]
        before = await snapshot(database_url)
        result = await processor.process(copies)

    assert result.duplicates == 1
    assert dict(result.dead_lettered) == {"undecodable": 1, "too_large": 2}
    assert await snapshot(database_url) == before  # no id of theirs is read: no inbox row, no effect
