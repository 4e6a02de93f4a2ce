"""Publisher.send_dead_letters: a dead letter the DLQ topic refuses for good goes without its value, then bare,
and is reported; a passing refusal raises for the batch to be retried (CONTRACT "Dead letters", issue 12)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError

from consumer.deadletter import send_dead_letters
from models.faults import is_transient, refusal_text
from models.records import OutgoingRecord, Refusal
from producer.publish import Publisher, SendTimedOut, bare, without_value

DLQ = "booking.events.dlq"
ADDED = (("dlq-reason", b"too_large"), ("dlq-source-topic", b"booking.events"), ("dlq-source-offset", b"9"))


def letter(value: bytes | None, key: bytes | None = b"bk_1") -> OutgoingRecord:
    return OutgoingRecord(DLQ, key, value, (("traceparent", b"00-x"), ("null", None), *ADDED))


class OneRecordBatch:
    def __init__(self) -> None:
        self.record: tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]] = (None, None, [])
        self.closed = False

    def append(
        self, *, key: bytes | None, value: bytes | None, timestamp: int | None, headers: list[tuple[str, bytes | None]]
    ) -> object:
        self.record = (key, value, headers)
        return object()  # aiokafka's: metadata of the appended record, None when the batch is full

    def close(self) -> None:
        self.closed = True

    def record_count(self) -> int:
        return 1


class FakeProducer:
    """Acks or refuses each record by a rule on what is sent; remembers every attempt, batch by batch."""

    def __init__(self, refuse: Callable[[OutgoingRecord, int], BaseException | None]) -> None:
        self._refuse = refuse
        self.sent: list[OutgoingRecord] = []
        self.acked: list[OutgoingRecord] = []

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any) -> asyncio.Future[Any]:
        assert not (key is None and value is None), "Need at least one: key or value"  # as aiokafka's send()
        return self._sent(OutgoingRecord(topic, key, value, tuple(headers or ())))

    # A record with neither key nor value goes as a batch of one (Publisher._send_keyless_tombstone).
    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> OneRecordBatch:
        return OneRecordBatch()

    async def send_batch(self, batch: OneRecordBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert batch.closed and partition in {0, 1, 2}
        key, value, headers = batch.record
        return self._sent(OutgoingRecord(topic, key, value, tuple(headers)))

    def _sent(self, record: OutgoingRecord) -> asyncio.Future[Any]:
        self.sent.append(record)
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self._refuse(record, len(self.sent))
        if error is None:
            self.acked.append(record)
            ack.set_result(len(self.acked))
        else:
            ack.set_exception(error)
        return ack


def too_large_over(limit: int) -> Callable[[OutgoingRecord, int], BaseException | None]:
    def refuse(record: OutgoingRecord, _: int) -> BaseException | None:
        size = len(record.value or b"") + len(record.key or b"") + sum(len(v or b"") for _, v in record.headers)
        return MessageSizeTooLargeError() if size > limit else None

    return refuse


def publisher(producer: FakeProducer) -> Publisher:
    return Publisher(producer)


async def test_a_copy_too_large_for_the_dlq_goes_without_its_value_with_size_and_sha256() -> None:
    value = b"v" * 5000
    producer = FakeProducer(too_large_over(1000))

    refused = await publisher(producer).send_dead_letters([letter(b"small"), letter(value)])

    assert refused == [
        Refusal(letter(value), "MessageSizeTooLargeError: [Error 10] MessageSizeTooLargeError", "value_omitted")
    ]
    assert producer.acked == [
        letter(b"small"),
        OutgoingRecord(
            DLQ,
            b"bk_1",
            None,
            (
                ("traceparent", b"00-x"),
                ("null", None),
                *ADDED,
                ("dlq-value-omitted", b"5000"),
                ("dlq-value-sha256", hashlib.sha256(value).hexdigest().encode()),
            ),
        ),
    ]


async def test_a_record_refused_only_with_its_batch_goes_again_whole() -> None:
    # The broker refuses a whole batch for its largest record: the small one of it is sent again unchanged.
    producer = FakeProducer(lambda r, n: MessageSizeTooLargeError() if n <= 2 else None)

    refused = await publisher(producer).send_dead_letters([letter(b"a"), letter(b"b")])

    assert refused == []
    assert producer.acked == [letter(b"a"), letter(b"b")]


async def test_headers_too_large_even_without_the_value_go_bare() -> None:
    big = letter(b"v", key=b"k" * 3000)
    producer = FakeProducer(too_large_over(1000))

    [refusal] = await publisher(producer).send_dead_letters([big])

    assert refusal.sent_as == "bare"
    assert producer.acked == [bare(big)]
    assert bare(big) == OutgoingRecord(
        DLQ,
        None,
        None,
        (
            *ADDED,
            ("dlq-value-omitted", b"1"),
            ("dlq-value-sha256", hashlib.sha256(b"v").hexdigest().encode()),
            ("dlq-key-omitted", b"3000"),
            ("dlq-headers-omitted", b"2"),
        ),
    )


async def test_refused_in_every_form_is_reported_lost_and_nothing_raises() -> None:
    producer = FakeProducer(lambda r, n: MessageSizeTooLargeError())

    [refusal] = await publisher(producer).send_dead_letters([letter(b"v")])

    assert refusal.sent_as == "lost"
    assert producer.acked == []
    assert producer.sent == [letter(b"v"), letter(b"v"), without_value(letter(b"v")), bare(letter(b"v"))]


@pytest.mark.parametrize(
    ("error", "raised_as"),
    [
        # The client's expiry of a batch not acknowledged: said as the publisher's own deadline (the broker is
        # silent, it refused nothing).
        (KafkaTimeoutError(), SendTimedOut),
        (NotLeaderForPartitionError(), NotLeaderForPartitionError),
    ],
)
async def test_a_passing_refusal_raises_for_a_retry_and_is_transient(error: Exception, raised_as: type) -> None:
    producer = FakeProducer(lambda r, n: error)

    with pytest.raises(raised_as) as raised:
        await publisher(producer).send_dead_letters([letter(b"v")])

    assert is_transient(raised.value)
    assert len(producer.sent) == 1  # not shrunk: the same copy goes again with the batch


async def test_a_copy_refused_by_the_producer_before_sending_is_handled_the_same() -> None:
    class ClientSide(FakeProducer):
        async def send(self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any) -> Any:
            if len(value or b"") > 1000:
                raise MessageSizeTooLargeError("larger than max_request_size")
            return await super().send(topic, value, key=key, headers=headers)

    producer = ClientSide(lambda r, n: None)

    [refusal] = await publisher(producer).send_dead_letters([letter(b"v" * 2000)])

    assert refusal.sent_as == "value_omitted"
    assert producer.acked == [without_value(letter(b"v" * 2000))]


async def test_send_dead_letters_counts_the_refusals_by_form() -> None:
    producer = FakeProducer(too_large_over(1000))

    counts = await send_dead_letters(publisher(producer), [letter(b"v" * 2000), letter(b"ok"), letter(b"w" * 3000)])

    assert counts == Counter({"value_omitted": 2})


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            ValueError("invalid input for query argument $9: ['Algebra\\x00II'] (embedded null character)"),
            "the database driver refused a value: invalid input for a query argument (embedded null character)",
        ),
        (MessageSizeTooLargeError(), "the broker refused it: [Error 10] MessageSizeTooLargeError"),
        (KeyError("x"), "processing failed (KeyError): 'x'"),
    ],
)
def test_a_processing_error_says_which_layer_refused_without_echoing_the_input(error: Exception, text: str) -> None:
    assert refusal_text(error) == text
    assert "$9" not in refusal_text(error)
