"""A thin aiokafka producer: acks=all, idempotent where the broker allows, every send awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
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

    async def stop(self) -> None:
        await self._producer.stop()
