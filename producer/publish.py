"""A thin aiokafka producer: acks=all, idempotent where the broker allows, every send awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata

from consumer.records import Headers

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


class Publisher:
    """Sends records and returns only once the broker acknowledged every one of them."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()

    @classmethod
    async def start(cls, bootstrap: str, client_id: str, **client_options: Any) -> Publisher:
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
            await producer.start()
        except KafkaConnectionError:
            await producer.stop()
            raise
        except KafkaError as error:
            # Some Kafka-protocol brokers (Tansu, for one) refuse InitProducerId. acks=all still holds; a
            # retried send may then duplicate a record, which consumers drop by its message_id.
            await producer.stop()
            log.warning("idempotent_producer_refused", error=repr(error), fallback="acks=all")
            producer = AIOKafkaProducer(enable_idempotence=False, **options)
            await producer.start()
        return cls(producer)

    async def send_all(self, records: Sequence[OutgoingRecord]) -> list[RecordMetadata]:
        """Queue all, then wait for all acks: one round of batches instead of one round trip per record."""
        if not records:
            return []
        futures = [
            await self._producer.send(r.topic, r.value, key=r.key, headers=list(r.headers) or None) for r in records
        ]
        return list(await asyncio.gather(*futures))

    async def send_batched(self, records: Sequence[OutgoingRecord]) -> None:
        """``send_all`` for many small records, in ``PartitionBatches`` (about 10 µs of Python less per record
        than ``send``, which the relay paid for every message). Keys are partitioned as by any Kafka client
        (murmur2 of the key, as ``send`` does); each partition's records keep their order."""
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
        await self._producer.stop()


@dataclass(frozen=True, slots=True)
class SentBatch:
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
        ack = await self._producer.send_batch(batch, topic, partition=partition)
        return SentBatch(topic, partition, batch.record_count(), ack)
