"""What the consume loop asks of the Kafka client, bounded: records as plain data, offset commits with a deadline, and
a wait that keeps polling (so a consumer that backs off stays in its group)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.structs import OffsetAndMetadata

from consumer.wire import split_unreadable
from models.errors import Transient
from models.records import Record

log = structlog.get_logger(__name__)


def to_record(message: ConsumerRecord[bytes, bytes]) -> Record:
    """The record as plain data: headers exactly as they arrived (a null value stays None), and its timestamp."""
    raw = message.headers
    headers, unreadable = split_unreadable(tuple(raw)) if raw else ((), None)  # most records have none
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        headers,
        message.timestamp,
        unreadable,
    )


class CommitLost(Transient):
    """An offset commit the broker did not take within its deadline, or refused (a rebalance): raised only for a
    bounded run (``replay``), whose resume point it is; the effects are committed in the database already."""


async def commit(
    consumer: AIOKafkaConsumer, offsets: Mapping[tuple[str, int], int], timeout_s: float, *, raise_lost: bool = False
) -> dict[tuple[str, int], int]:
    """Commit ``offsets`` ((topic, partition) -> the next offset to consume) of the partitions ``consumer`` owns,
    within ``timeout_s`` seconds; returns those the broker took (none when the commit was lost). A commit lost to a
    rebalance or a silent coordinator is logged, not raised: the
    effects are committed already, and what the partition's next owner delivers again the inbox drops (CONTRACT
    "What each event does": offsets only after the effects). With ``raise_lost`` it raises CommitLost instead:
    a bounded run stops at an outage rather than go on for as long as each commit's deadline allows (CONTRACT
    "it never hangs")."""
    owned = consumer.assignment()
    chosen = {
        TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items() if TopicPartition(t, p) in owned
    }
    lost = len(offsets) - len(chosen)
    try:
        if chosen:
            # aiokafka retries a commit without end while the group coordinator is unreachable (a silent broker):
            # bounded here. Skipping one is safe: the next batch's commit covers these partitions, and what a crash
            # before it redelivers, the inbox drops.
            async with asyncio.timeout(timeout_s):
                await consumer.commit(chosen)
    except (CommitFailedError, IllegalStateError, RebalanceInProgressError, TimeoutError) as error:
        if raise_lost:
            why = f"no answer within {timeout_s:g} s" if isinstance(error, TimeoutError) else type(error).__name__
            raise CommitLost(f"the offset commit was not taken: {why}") from error
        lost = len(offsets)
        chosen = {}
        log.warning("offset_commit_lost", error=type(error).__name__)
    if lost:
        # The effects are committed; the partition's new owner redelivers and the inbox drops the repeats.
        log.warning("offsets_not_committed_after_rebalance", partitions=lost)
    return {(tp.topic, tp.partition): meta.offset for tp, meta in chosen.items()}


async def poll_paused(consumer: AIOKafkaConsumer, delay_s: float, *, keep_paused: Collection[TopicPartition]) -> None:
    """Wait ``delay_s`` seconds without leaving the group: every assigned partition is paused, so it fetches nothing,
    but getmany still counts as a poll, so a long outage does not exceed max_poll_interval_ms and cost a rebalance.
    Then every partition is resumed but those of ``keep_paused``. A partition assigned by a rebalance meanwhile (so
    not paused) is put back where it was: nothing is lost."""
    paused = consumer.assignment() - set(keep_paused)
    consumer.pause(*paused)
    try:
        unexpected = await consumer.getmany(timeout_ms=int(delay_s * 1000))
        for tp, messages in unexpected.items():
            consumer.seek(tp, messages[0].offset)
    finally:
        consumer.resume(*(paused & consumer.assignment()))
