"""The consumer loop: getmany, one transaction per batch, offsets committed only after it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumer.faults import is_transient
from consumer.process import BatchProcessor, BatchResult
from consumer.records import Record

log = structlog.get_logger(__name__)

BatchHook = Callable[[BatchResult], Awaitable[None]]


def to_record(message: ConsumerRecord[bytes, bytes]) -> Record:
    headers = tuple((name, value or b"") for name, value in (message.headers or ()))
    return Record(message.topic, message.partition, message.offset, message.key, message.value, headers)


class ConsumerLoop:
    """Steppable: ``run_once`` fetches one batch, applies it and commits; ``run`` repeats until stopped."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        processor: BatchProcessor,
        *,
        max_records: int,
        fetch_timeout_ms: int = 500,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        before_offset_commit: BatchHook | None = None,
        after_commit: BatchHook | None = None,
    ) -> None:
        self._consumer = consumer
        self._processor = processor
        self._max_records = max_records
        self._fetch_timeout_ms = fetch_timeout_ms
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        # Seams: tests inject a crash between the database commit and the offset commit; the service
        # wakes the outbox relay after each commit.
        self._before_offset_commit = before_offset_commit
        self._after_commit = after_commit

    async def run_once(self) -> BatchResult | None:
        """One batch end to end; None when nothing arrived within the fetch timeout."""
        batch = await self._consumer.getmany(timeout_ms=self._fetch_timeout_ms, max_records=self._max_records)
        records = [to_record(m) for messages in batch.values() for m in messages]
        if not records:
            return None
        result = await self._process_with_retry(records)
        if self._before_offset_commit is not None:
            await self._before_offset_commit(result)
        await self._consumer.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in result.next_offsets.items()}
        )
        log.info(
            "batch_committed",
            records=result.records,
            applied=result.applied,
            duplicates=result.duplicates,
            ignored=result.ignored,
            dead_lettered=sum(result.dead_lettered.values()),
            sessions_created=result.sessions_created,
            sessions_updated=result.sessions_updated,
            offsets={f"{t}/{p}": o for (t, p), o in sorted(result.next_offsets.items())},
        )
        if self._after_commit is not None:
            await self._after_commit(result)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; the batch in hand is always finished and committed first."""
        while not stop.is_set():
            await self.run_once()

    async def _process_with_retry(self, records: list[Record]) -> BatchResult:
        """Retry the same records (the fetched position is kept) with capped exponential backoff."""
        delay = self._retry_initial_s
        while True:
            try:
                return await self._processor.process(records)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("batch_retry", cause=type(error).__name__, error=str(error)[:300], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
