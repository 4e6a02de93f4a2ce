"""A thin aiokafka producer: acks=all, idempotent where the broker allows, every send awaited."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata

from models.errors import Transient
from models.records import (
    DLQ_HEADER_PREFIX,
    DLQ_HEADERS_OMITTED,
    DLQ_KEY_OMITTED,
    DLQ_VALUE_OMITTED,
    DLQ_VALUE_SHA256,
    Headers,
    OutgoingRecord,
    Refusal,
    SentAs,
)

log = structlog.get_logger(__name__)

DEFAULT_REQUEST_TIMEOUT_MS = 40_000  # aiokafka's, for a Publisher made without options


class SendTimedOut(Transient):
    """The broker did not acknowledge a send within ``Publisher.send_timeout_s``: retried like any outage by the
    service (the relay's step, a batch's dead letters), one line and exit code 2 for an operator's command."""


# The record itself is what the broker (or the producer, before sending) refuses: sent again unchanged, it is
# refused again. Anything else (timeouts, a leader moving, the broker away) passes, and is retried.
LASTING_REFUSALS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,  # over the topic's max.message.bytes, or the producer's max_request_size
    RecordListTooLargeError,
    CorruptRecordException,  # the broker's word for a record it cannot take as it is (also: too large)
    InvalidTimestampError,
)


def without_value(record: OutgoingRecord) -> OutgoingRecord:
    """The copy without its value, which can still be fetched from the source topic by its dlq-source-* headers;
    adds ``dlq-value-omitted`` (the value's size in bytes) and ``dlq-value-sha256`` (CONTRACT, "Dead letters")."""
    value = record.value or b""
    omitted = (
        (DLQ_VALUE_OMITTED, str(len(value)).encode()),
        (DLQ_VALUE_SHA256, hashlib.sha256(value).hexdigest().encode()),
    )
    return replace(record, value=None, headers=record.headers + omitted)


def bare(record: OutgoingRecord) -> OutgoingRecord:
    """Only the dlq-* headers, for a copy whose key or headers are themselves too large for the DLQ topic."""
    kept = tuple((name, v) for name, v in without_value(record).headers if name.startswith(DLQ_HEADER_PREFIX))
    omitted = (
        (DLQ_KEY_OMITTED, str(len(record.key or b"")).encode()),
        (DLQ_HEADERS_OMITTED, str(len(record.headers) - len(kept) + 2).encode()),
    )
    return OutgoingRecord(record.topic, None, None, kept + omitted)


_FALLBACKS: tuple[tuple[SentAs, Callable[[OutgoingRecord], OutgoingRecord]], ...] = (
    ("value_omitted", without_value),
    ("bare", bare),
)


class Publisher:
    """Sends records and returns only once the broker acknowledged every one of them."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        dead_letters: AIOKafkaProducer | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """``producer`` sends everything but dead letters; ``dead_letters`` sends those, else one made from
        ``options`` (``AIOKafkaProducer``'s) on the first dead letter, not idempotent (see ``send_dead_letters``),
        else ``producer`` too."""
        self._producer = producer
        self._dead_letters = dead_letters
        self._options = options
        self._partitioner = DefaultPartitioner()
        # Every send is awaited within a deadline (CONTRACT "it never hangs"): an idempotent aiokafka producer
        # retries a batch for as long as the broker stays silent. Two request timeouts: one retry's worth.
        request_timeout_s = (options or {}).get("request_timeout_ms", DEFAULT_REQUEST_TIMEOUT_MS) / 1000
        self.send_timeout_s: float = 2 * request_timeout_s

    @classmethod
    async def start(cls, bootstrap: str, client_id: str, **client_options: Any) -> Publisher:
        """A started producer (``client_options``: ``kafka_client_options``), idempotent unless the broker refuses
        it. Raises KafkaConnectionError when the broker cannot be reached, and what a non-idempotent start raises."""
        options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "linger_ms": 5,
            "max_request_size": 2 * 1024 * 1024,
            **client_options,
        }
        producer = AIOKafkaProducer(enable_idempotence=True, **options)
        try:
            # Closed again if its start fails or is cancelled (SIGTERM, Ctrl-C): else nothing would ever close it,
            # and asyncio would report an unclosed producer after the command's last line.
            await _started(producer)
        except KafkaConnectionError:
            raise
        except KafkaError as error:
            # Some Kafka-protocol brokers (Tansu, for one) refuse InitProducerId. acks=all still holds; a
            # retried send may then duplicate a record, which consumers drop by its message_id.
            log.warning("idempotent_producer_refused", error=repr(error), fallback="acks=all")
            producer = await _started(AIOKafkaProducer(enable_idempotence=False, **options))
        return cls(producer, options=options)

    async def send_all(self, records: Sequence[OutgoingRecord]) -> list[RecordMetadata]:
        """Queue all, then wait for all acks: one round of batches instead of one round trip per record. Returns
        each record's metadata, in order; raises the first send's KafkaError (some records may have gone), or
        SendTimedOut after ``send_timeout_s``."""
        if not records:
            return []
        async with self._deadline(len(records)):
            futures = [await self._send(r) for r in records]
            return list(await asyncio.gather(*futures))

    @contextlib.asynccontextmanager
    async def _deadline(self, records: int) -> AsyncIterator[None]:
        """Within ``send_timeout_s`` seconds, or SendTimedOut (what was queued may still go: at least once). The
        client's own expiry of a batch not acknowledged (KafkaTimeoutError, after its request timeout, usually
        first) is said the same way: the broker refused nothing, it stopped answering."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.send_timeout_s):
                yield
        except (TimeoutError, KafkaTimeoutError):
            waited = time.monotonic() - started
            raise SendTimedOut(
                f"the Kafka broker did not acknowledge {records} record(s) within {waited:.0f} s"
            ) from None

    async def send_dead_letters(self, records: Sequence[OutgoingRecord]) -> list[Refusal]:
        """``send_all`` for dead letters, which the DLQ topic may refuse for good (a copy too large for it, say):
        such a one is sent again alone (a whole batch fails with its largest record), then without its value,
        then bare, and reported (CONTRACT, "Dead letters": a refused dead letter never stops the partition). A
        passing refusal raises, for the caller to retry the batch; nothing else does. Returns one ``Refusal`` per
        record not sent whole.
        """
        if not records:
            return []
        async with self._deadline(len(records)):
            return await self._send_dead_letters(records)

    async def _send_dead_letters(self, records: Sequence[OutgoingRecord]) -> list[Refusal]:
        producer = await self._dead_letter_producer()
        acks: list[asyncio.Future[RecordMetadata]] = []
        for r in records:
            try:
                acks.append(await self._send(r, producer))
            except LASTING_REFUSALS as error:  # refused before sending: larger than max_request_size
                refused: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
                refused.set_exception(error)
                acks.append(refused)
        outcomes = await asyncio.gather(*acks, return_exceptions=True)
        again: list[tuple[OutgoingRecord, BaseException]] = []
        for r, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, LASTING_REFUSALS):
                again.append((r, outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
        reports = [await self._send_despite(r, error, producer) for r, error in again]
        return [report for report in reports if report is not None]

    async def _dead_letter_producer(self) -> AIOKafkaProducer:
        """Dead letters go through a producer of their own, not idempotent: an idempotent producer numbers each
        partition's batches, and a batch the broker refuses for good (a copy too large for the DLQ topic, which
        ``send_dead_letters`` then sends smaller) leaves a gap in those numbers that the broker refuses every later
        batch of the partition for (OutOfOrderSequenceNumber): the batch was retried for ever and its partition
        stopped. A retried dead letter may then be written twice, which the contract allows (at least once)."""
        if self._dead_letters is None:
            if self._options is None:
                return self._producer
            producer = AIOKafkaProducer(**{**self._options, "enable_idempotence": False})
            self._dead_letters = await _started(producer)  # if it fails, the next batch's attempt makes another
        return self._dead_letters

    async def _send_despite(
        self, record: OutgoingRecord, error: BaseException, producer: AIOKafkaProducer
    ) -> Refusal | None:
        """One refused dead letter, alone, then in ever smaller forms; None: alone, it went through whole (it was
        refused with a larger record of its batch)."""
        try:
            await (await self._send(record, producer))
            return None
        except LASTING_REFUSALS as refusal:
            error = refusal
        for sent_as, smaller in _FALLBACKS:
            try:
                await (await self._send(smaller(record), producer))
            except LASTING_REFUSALS:
                continue
            return Refusal(record, _describe(error), sent_as)
        return Refusal(record, _describe(error), "lost")

    async def _send(
        self, r: OutgoingRecord, producer: AIOKafkaProducer | None = None
    ) -> asyncio.Future[RecordMetadata]:
        producer = producer or self._producer
        if r.key is None and r.value is None:
            return await self._send_keyless_tombstone(r, producer)
        ack: asyncio.Future[RecordMetadata] = await producer.send(
            r.topic, r.value, key=r.key, headers=list(r.headers) or None
        )
        return ack

    async def _send_keyless_tombstone(
        self, r: OutgoingRecord, producer: AIOKafkaProducer
    ) -> asyncio.Future[RecordMetadata]:
        """A record with neither key nor value, as a batch of one: aiokafka's ``send`` refuses one (an assertion)
        though Kafka takes it, and the dead letter of a keyless tombstone is one, as is every copy sent without its
        value for lack of a key, or bare (CONTRACT "Dead letters": key and value unchanged, the partition moves on).
        Its partition is chosen as ``send`` would for a record without a key."""
        every = sorted(await producer.partitions_for(r.topic))
        batches = PartitionBatches(producer)
        await batches.add(r.topic, self._partitioner(None, every, every), None, None, r.headers)
        [sent] = await batches.flush()
        return sent.ack

    async def send_batched(self, records: Sequence[OutgoingRecord]) -> None:
        """``send_all`` for many small records, in ``PartitionBatches`` (about 10 µs of Python less per record
        than ``send``, which the relay paid for every message). Keys are partitioned as by any Kafka client
        (murmur2 of the key, as ``send`` does); each partition's records keep their order. Returns once every
        batch is acknowledged; raises the first batch's KafkaError, or SendTimedOut after ``send_timeout_s``."""
        async with self._deadline(len(records)):
            placement: dict[str, list[int]] = {}
            batches = PartitionBatches(self._producer)
            acks: list[asyncio.Future[RecordMetadata]] = []
            for r in records:
                if (every := placement.get(r.topic)) is None:
                    every = placement[r.topic] = sorted(await self._producer.partitions_for(r.topic))
                full = await batches.add(r.topic, self._partitioner(r.key, every, every), r.key, r.value, r.headers)
                if full is not None:
                    acks.append(full.ack)
            acks += [sent.ack for sent in await batches.flush()]
            await asyncio.gather(*acks)

    async def stop(self) -> None:
        """Flush what is queued and close the producers."""
        try:
            await self._producer.stop()
        finally:
            if self._dead_letters is not None and self._dead_letters is not self._producer:
                await self._dead_letters.stop()


async def _started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """``producer``, started; closed again if the start fails or is cancelled, and the error raised."""
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


@dataclass(frozen=True, slots=True)
class SentBatch:
    """One partition batch handed to the producer: ``records`` records, acknowledged when ``ack`` resolves."""

    topic: str
    partition: int
    records: int
    ack: asyncio.Future[RecordMetadata]  # its metadata carries the batch's base offset


class PartitionBatches:
    """Records appended to one open batch per (topic, partition), each handed to the producer whole when it
    fills up or at ``flush``: what the producer's accumulator does, without its per-record Python. A
    partition's batches are handed over in order, and so are its records."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], Any] = {}

    async def add(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> SentBatch | None:
        """Append one record; if the partition's batch was full, it is sent first and returned."""
        batch = self._open.get((topic, partition))
        if batch is not None and batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is not None:
            return None
        sent = None if batch is None else await self._send(topic, partition, batch)
        batch = self._open[(topic, partition)] = self._producer.create_batch()
        batch.append(key=key, value=value, timestamp=None, headers=list(headers))  # one always fits
        return sent

    async def flush(self) -> list[SentBatch]:
        """Send every open batch."""
        open_batches, self._open = self._open, {}
        return [await self._send(topic, partition, batch) for (topic, partition), batch in open_batches.items()]

    async def _send(self, topic: str, partition: int, batch: Any) -> SentBatch:
        # Closed: the batch is complete, so the producer sends it now instead of lingering (linger_ms) for records
        # that cannot join it; on the relay's idle path that was 5 ms of every step.
        batch.close()
        ack = await self._producer.send_batch(batch, topic, partition=partition)
        return SentBatch(topic, partition, batch.record_count(), ack)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
