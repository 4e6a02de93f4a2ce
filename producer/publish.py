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
        """``send_all`` for many small records, appended to one batch per partition (more when one fills up)
        and handed over whole: the producer's accumulator does the same, but with about 10 µs of Python per
        record, which the relay paid for every message. Keys are partitioned as by any Kafka client (murmur2 of
        the key, as ``send`` does); each partition's records keep their order."""
        placement: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], Any] = {}
        futures: list[asyncio.Future[RecordMetadata]] = []
        for r in records:
            if (every := placement.get(r.topic)) is None:
                every = placement[r.topic] = sorted(await self._producer.partitions_for(r.topic))
            partition = self._partitioner(r.key, every, every)
            batch = batches.get((r.topic, partition))
            headers = list(r.headers)
            if batch is None or batch.append(key=r.key, value=r.value, timestamp=None, headers=headers) is None:
                if batch is not None:  # full: hand it over, start another
                    futures.append(await self._producer.send_batch(batch, r.topic, partition=partition))
                batch = batches[(r.topic, partition)] = self._producer.create_batch()
                batch.append(key=r.key, value=r.value, timestamp=None, headers=headers)  # one always fits
        for (topic, partition), batch in batches.items():
            futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def stop(self) -> None:
        await self._producer.stop()
