"""(c2) Running the peer (``bench.peer``) on the sample, timing it, and checking what it left behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import checks
from bench.databases import rows
from bench.harness import Harness
from bench.peer import Peer, build_peer
from bench.peer_checks import cancelled_bookings, sessions_digest, topic_rows
from bench.produce import Ends
from bench.report import Check, Stage
from bench.workload import Workload
from booking_sessions.service import meeting_links
from booking_sessions.topics import read_topic

STALL_TIMEOUT_S = 60.0  # nothing handled or relayed for this long while work is left: the peer is stuck


@dataclass(frozen=True)
class PeerRun:
    """The stage's figures and where its rows are, for the comparison with the service's rows after (d)."""

    stage: Stage
    url: str
    booking_ids: tuple[str, ...]


async def run_peer(h: Harness, url: str, topics: tuple[str, str], ends: Ends, sample: Workload, every: int) -> PeerRun:
    """The sample through the peer (``topics``: its input, holding the sample, and its output), from its first
    handled message until every message is handled, its offset committed and every outbox row relayed (the relay's
    tail counts, as for (d)). Adds the peer's checks."""
    topic, output = topics
    group = f"bench-{h.tag}-peer"
    peer = build_peer(
        bootstrap=h.bootstrap,
        database_url=url,
        input_topic=topic,
        output_topic=output,
        group_id=group,
        link_for=meeting_links(h.settings),
    )
    with h.task("(c2) peer: FastStream + faststream-outbox", sample.events) as t:
        await peer.start()
        try:
            handled = await _until_handled(peer, sample.events, h.advance(t))
            finished = max(handled, await _until_relayed(peer))
            await _until_committed(h.bootstrap, group, topic, ends)  # by then, long since
        finally:
            await peer.stop()
    counts = peer.counts
    started = counts.first_at if counts.first_at is not None else finished
    note = (
        f"1 booking in {every}, whole histories; one transaction and one offset commit per message; "
        f"{counts.duplicates:,} dup; relay +{max(0.0, finished - handled):.2f} s "
        f"({counts.relayed:,} rows, one at a time)"
    )
    label = "(c2) peer: FastStream + faststream-outbox"
    stage = Stage("peer", label, counts.handled, finished - started, note)

    counted = await rows(url)
    published = await read_topic(h.bootstrap, output, expected=counts.relayed)
    peer_rows = topic_rows(counted, published, await cancelled_bookings(url))
    h.results.checks.append(
        checks.rows_check(
            "(c2) peer",
            peer_rows,
            inbox=sample.unique_message_ids,
            bookings=sample.bookings,
            cancelled=sample.cancelled_bookings,
        )
    )
    h.results.checks.append(checks.output_check("(c2) peer", published, peer_rows.outbox))
    h.results.checks.append(checks.duplicates_check("(c2) peer", counts.duplicates, sample.counts["redelivered"]))
    ids = tuple(sorted({sample.booking_id(r.booking) for r in sample.records}))
    return PeerRun(stage, url, ids)


async def same_rows_check(peer: PeerRun, service_url: str) -> Check:
    """The peer's sessions, participants and reservations equal the service's for the same bookings."""
    theirs = await sessions_digest(peer.url, peer.booking_ids)
    ours = await sessions_digest(service_url, peer.booking_ids)
    detail = f"{theirs[0]:,} sessions, digest {theirs[1][:12]}; the service's {ours[0]:,}, {ours[1][:12]}"
    return Check("(c2) peer rows equal the service's", theirs == ours and theirs[0] == len(peer.booking_ids), detail)


async def _until_handled(peer: Peer, records: int, progress: Callable[[int], None]) -> float:
    """Every record of the sample handled (duplicates too); the time the last one was."""
    seen, deadline = 0, time.monotonic() + STALL_TIMEOUT_S
    while peer.counts.handled < records:
        await asyncio.sleep(0.05)
        if peer.counts.handled != seen:
            progress(peer.counts.handled - seen)
            seen, deadline = peer.counts.handled, time.monotonic() + STALL_TIMEOUT_S
        elif time.monotonic() > deadline:
            raise TimeoutError(f"peer: {peer.counts.handled} of {records} records handled, none for a while")
    return peer.counts.last_at


async def _until_committed(bootstrap: str, group: str, topic: str, ends: Ends) -> None:
    """The peer's group committed offsets past every record (AckPolicy.ACK commits after each handler)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + STALL_TIMEOUT_S
        for partition, end in ends.items():
            while (await consumer.committed(TopicPartition(topic, partition)) or 0) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"peer: offsets of {topic}/{partition} not committed up to {end}")
                await asyncio.sleep(0.05)
    finally:
        await consumer.stop()


async def _until_relayed(peer: Peer) -> float:
    """No outbox row left; the time that was first seen."""
    seen, deadline = -1, time.monotonic() + STALL_TIMEOUT_S
    while waiting := await peer.waiting():
        if waiting != seen:
            seen, deadline = waiting, time.monotonic() + STALL_TIMEOUT_S
        elif time.monotonic() > deadline:
            raise TimeoutError(f"peer: {waiting} outbox rows not relayed")
        await asyncio.sleep(0.02)
    return time.monotonic()
