"""Replay the input topic through the same consume loop and BatchProcessor as ``run``, under a consumer group of its
own, from planned start offsets to stop offsets taken when it begins (or ``--until``).

The inbox drops what was applied and the upserts keep the newest snapshot, so a replay changes only what is
missing (a rebuild into an empty database recreates everything, with the same ids). The replay group commits
after each batch: running again with the same ``--group`` resumes where an interrupted replay stopped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import Progress
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.meeting import check_meeting_key, meeting_key
from booking_sessions.ops.arguments import ArgumentError
from booking_sessions.ops.failures import (
    OperatorError,
    changes_begin,
    check_database,
    close_within,
    one_line,
    require_topics,
    topic_partitions,
)
from booking_sessions.service import COMMITTED_ONLY, FETCH_LIMITS, batch_processor, create_engine
from booking_sessions.settings import Settings
from consumer import wire
from consumer.client import CommitLost
from consumer.loop import ConsumerLoop
from consumer.results import BatchResult, merge
from producer.publish import Publisher
from producer.relay import OutboxRelay

RETRY_ATTEMPTS = 6  # about 12 s of capped backoff: enough for a failover, short enough for an operator
RETRY_MAX_S = 5.0  # the cap of one wait between two attempts (the first is consumer.loop's 0.2 s)
STALL_TIMEOUT_S = 60.0  # no progress on a partition short of its stop offset for this long: say so, stop


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition this replay covers: ``start`` inclusive, ``stop`` exclusive."""

    start: int
    stop: int
    resumed: bool = False  # start comes from the replay group's committed offset

    @property
    def size(self) -> int:
        """How many offsets the span covers (0: nothing to do)."""
        return max(0, self.stop - self.start)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What the operator asked for (README "Replay"): the replay's own ``group_id``, where to start (``since``, a
    time, or explicit ``offsets`` by partition) and stop (``until``), ``dry_run`` (count, write and send nothing,
    commit nothing), and ``relay`` (publish the outbox rows at the end)."""

    group_id: str
    since: datetime | None = None
    offsets: Mapping[int, int] | None = None
    until: datetime | None = None
    dry_run: bool = False
    relay: bool = False


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did: its spans and how far each partition got (``reached``), the batches' counts together
    (``totals``), the outbox rows it published (``--relay``) and those still waiting, and its duration in seconds."""

    topic: str
    group_id: str
    dry_run: bool
    spans: dict[int, Span]
    totals: BatchResult = field(default_factory=lambda: merge([]))
    reached: dict[int, int] = field(default_factory=dict)
    published: int | None = None  # outbox rows relayed by this command (--relay)
    backlog: int | None = None  # outbox rows still waiting for a relay at the end
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as ``replay --json`` prints it (``ops.reports.replay_report`` renders it for a person)."""
        t = self.totals
        return {
            "topic": self.topic,
            "group_id": self.group_id,
            "dry_run": self.dry_run,
            "partitions": {
                str(p): {"from": s.start, "to": s.stop, "resumed": s.resumed, "reached": self.reached.get(p, s.start)}
                for p, s in sorted(self.spans.items())
            },
            "records": t.records,
            "applied": t.applied,
            "duplicates": t.duplicates,
            "ignored": t.ignored,
            "dead_lettered": dict(sorted(t.dead_lettered.items())),
            "sessions_created": t.sessions_created,
            "sessions_updated": t.sessions_updated,
            "sessions_cancelled": t.sessions_cancelled,
            "sessions_cancelled_unannounced": t.cancelled_unannounced,
            "outbox_published": self.published,
            "outbox_backlog": self.backlog,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def plan_spans(
    partitions: Sequence[int],
    beginning: Mapping[int, int],
    end: Mapping[int, int],
    committed: Mapping[int, int | None],
    *,
    since: Mapping[int, int | None] | None = None,
    explicit: Mapping[int, int] | None = None,
    until: Mapping[int, int | None] | None = None,
) -> dict[int, Span]:
    """Pure: where each partition's replay starts and stops.

    Start: the replay group's committed offset (resume), else the explicit offset, else the first offset at or
    after ``--since``, else the beginning. Stop: the first offset at or after ``--until``, else the end offset
    taken now. Offsets already removed by retention start at the beginning instead.

    Raises ArgumentError for an explicit partition the topic lacks, or an explicit start past its partition's end
    (offset > end; the end itself replays nothing, as a resumed replay that is done).
    """
    if explicit is not None:
        unknown = sorted(set(explicit) - set(partitions))
        if unknown:
            raise ArgumentError(
                f"--offsets names partition {', '.join(map(str, unknown))}; the topic has {_describe(partitions)}"
            )
        # A start past the end names no record that exists: a typo (a digit too many, another partition's offset)
        # rather than a wish to replay nothing, which exiting 0 with "nothing to replay" would hide.
        past = sorted(p for p, offset in explicit.items() if offset > end[p] and committed.get(p) is None)
        if past:
            raise ArgumentError(
                "--offsets starts past the end of "
                + ", ".join(f"partition {p} (offset {explicit[p]}; its end is {end[p]})" for p in past)
                + ": no record there to replay"
            )
        chosen: Sequence[int] = sorted(explicit)
    else:
        chosen = sorted(partitions)
    spans = {}
    for p in chosen:
        stop = end[p]
        limit = until.get(p) if until is not None else None
        if limit is not None:
            stop = min(stop, limit)
        done = committed.get(p)
        if done is not None:
            start = done
        elif explicit is not None:
            start = explicit[p]
        elif since is not None:
            first = since.get(p)
            start = end[p] if first is None else first  # no record at or after --since
        else:
            start = beginning[p]
        start = max(start, beginning[p])
        spans[p] = Span(start, max(start, stop), resumed=done is not None)
    return spans


def _describe(partitions: Sequence[int]) -> str:
    return f"partitions {min(partitions)}-{max(partitions)}" if partitions else "no partitions"


async def replay_topic(settings: Settings, request: ReplayRequest, progress: Progress) -> ReplaySummary:
    """Replay the input topic as ``request`` says, showing ``progress``, and return the summary.

    The same consume loop and batch processor as ``run`` (consumer.loop.ConsumerLoop, service.batch_processor):
    the same decoding, transactions, dead letters and retries (here RETRY_ATTEMPTS per batch, then the error), and
    offsets committed to the replay group only after each batch's effects (none for a dry run). Raises
    OperatorError before anything is read when Kafka is not configured, the group is the live one, or the database
    cannot be used; ConfigurationError when the meeting key is missing or does not fit; OperatorError when a
    partition stops moving for STALL_TIMEOUT_S, or an offset commit is not taken (a broker gone silent or away).
    """
    if settings.kafka_bootstrap is None:
        raise OperatorError("BOOKING_KAFKA_BOOTSTRAP is not set: replay reads the service's input topic")
    if request.group_id == settings.group_id:
        raise OperatorError(
            f"refusing to replay as the live group {settings.group_id!r}: it would move the service's offsets; "
            "choose another --group"
        )
    bootstrap = settings.kafka_bootstrap
    key = meeting_key(settings)  # refuse without the secret before anything is read
    options = kafka_client_options(settings)
    partitions = await topic_partitions(bootstrap, settings.input_topic, "BOOKING_INPUT_TOPIC", **options)
    # Both, with or without --relay: the outbox rows a replay writes name the output topic, and whichever relay
    # publishes them later sends them there (a mistyped name would send every announcement to a topic nobody reads).
    outputs = {"BOOKING_DLQ_TOPIC": settings.dlq_topic, "BOOKING_OUTPUT_TOPIC": settings.output_topic}
    await require_topics(bootstrap, outputs, **options)
    wire.install()  # the same reader as ``run``: an unreadable record is a dead letter here too
    engine = create_engine(settings)
    publisher: Publisher | None = None
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="booking-sessions-replay",
        group_id=request.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FETCH_LIMITS,
        **COMMITTED_ONLY,  # as ``run``; its stop offsets (end_offsets) are then the last stable ones
        **options,
    )
    try:
        await check_database(engine, settings.database_url_value())
        # A rebuild under another key would make other links, silently. A dry run records nothing, not even the
        # key's first use: a dry run with a mistyped secret would otherwise lock the right one out of `run`.
        await check_meeting_key(engine, key, record=not request.dry_run)
        await consumer.start()
        spans = await _plan(consumer, settings.input_topic, partitions, request)
        publisher = await Publisher.start(bootstrap, client_id="booking-sessions-replay", **options)
        summary = ReplaySummary(settings.input_topic, request.group_id, request.dry_run, spans)
        processor = batch_processor(settings, engine, publisher, dry_run=request.dry_run, group_id=request.group_id)
        loop = ConsumerLoop(
            consumer,
            processor,
            max_records=settings.max_batch_records,
            catch_up_records=settings.catch_up_batch_records,
            retry_max_s=RETRY_MAX_S,
            retry_attempts=RETRY_ATTEMPTS,
            commit_offsets=not request.dry_run,  # a dry run must not move a group it may resume
            commit_timeout_s=settings.kafka_commit_timeout_s,
            raise_lost_commits=True,
        )
        started = time.monotonic()
        # The command line adds how to resume (``--group``): a rerun without it would start a new group.
        resume = "a dry run: nothing was changed" if request.dry_run else "what was applied is in the database"
        try:
            await _consume(consumer, loop, summary, progress, resume)
        except CommitLost as error:
            raise OperatorError(f"{error} (group {request.group_id!r} at {bootstrap}); {resume}") from None
        except OperatorError:
            raise
        except Exception as error:
            # Its retries spent (the database away, say): the operator's line, and how to go on.
            readable = one_line(error)
            if readable is None:
                raise  # a bug: its traceback
            raise OperatorError(f"{readable}; {resume}") from None
        if request.relay and not request.dry_run:
            summary.published = await OutboxRelay(engine, publisher, batch_rows=settings.relay_batch_rows).drain()
        summary.backlog = await _outbox_backlog(engine)
        summary.elapsed_s = time.monotonic() - started
        return summary
    finally:
        await close_within(consumer.stop(), "consumer")
        if publisher is not None:
            await close_within(publisher.stop(), "producer")
        await engine.dispose()


async def _plan(
    consumer: AIOKafkaConsumer, topic: str, partitions: Sequence[int], request: ReplayRequest
) -> dict[int, Span]:
    tps = [TopicPartition(topic, p) for p in partitions]
    beginning = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
    end = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    committed = {tp.partition: await consumer.committed(tp) for tp in tps}
    since = await _offsets_at(consumer, tps, request.since) if request.since is not None else None
    until = await _offsets_at(consumer, tps, request.until) if request.until is not None else None
    return plan_spans(partitions, beginning, end, committed, since=since, explicit=request.offsets, until=until)


async def _offsets_at(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], moment: datetime
) -> dict[int, int | None]:
    """The first offset of each partition whose timestamp is at or after ``moment`` (None: there is none)."""
    found = await consumer.offsets_for_times({tp: int(moment.timestamp() * 1000) for tp in tps})
    return {tp.partition: (None if at is None else at.offset) for tp, at in found.items()}


async def _consume(
    consumer: AIOKafkaConsumer, loop: ConsumerLoop, summary: ReplaySummary, progress: Progress, left: str
) -> None:
    """The planned spans through the service's own consume loop (``ConsumerLoop.run_to``): every planned partition
    is assigned (commits need that) and sought to its start, the ones with nothing to do paused. Raises
    OperatorError when no partition moved for STALL_TIMEOUT_S, ending with ``left`` (what the stop leaves)."""
    spans = {TopicPartition(summary.topic, p): span for p, span in summary.spans.items()}
    todo = {tp: span.stop for tp, span in spans.items() if span.size > 0}
    summary.reached = {p: span.start for p, span in summary.spans.items()}
    task = progress.add_task(
        "dry run" if summary.dry_run else "replaying", total=sum(s.size for s in summary.spans.values())
    )
    consumer.assign(list(spans))
    for tp, span in spans.items():
        consumer.seek(tp, span.start)
    consumer.pause(*(tp for tp in spans if tp not in todo))
    if not summary.dry_run:
        changes_begin()
    # The plan itself first: a resumed replay then continues where this one stops, on every partition.
    await loop.commit({(tp.topic, tp.partition): span.start for tp, span in spans.items() if not span.resumed})
    last_move = time.monotonic()

    def advanced(reached: Mapping[TopicPartition, int]) -> None:
        nonlocal last_move
        for tp, offset in reached.items():
            if offset > summary.reached[tp.partition]:
                last_move = time.monotonic()
            summary.reached[tp.partition] = offset
        progress.update(task, completed=sum(summary.reached[p] - s.start for p, s in summary.spans.items()))
        stuck = {tp: todo[tp] for tp, offset in reached.items() if offset < todo[tp]}
        if stuck and time.monotonic() - last_move > STALL_TIMEOUT_S:
            where = ", ".join(
                f"{tp.partition} at {summary.reached[tp.partition]} of {stop}" for tp, stop in stuck.items()
            )
            raise OperatorError(
                f"no progress for {STALL_TIMEOUT_S:g} s on partition {where}: the broker or the database is not "
                f"answering (the warnings above say which); {left}"
            )

    summary.totals = await loop.run_to(todo, advanced)


async def _outbox_backlog(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM outbox_messages WHERE published_at IS NULL")) or 0)
