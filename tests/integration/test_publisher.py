"""The relay's batched send puts every record where ``send()`` would, in order per key, with its headers."""

from __future__ import annotations

from collections import defaultdict

from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from models.records import OutgoingRecord
from producer.publish import Publisher


async def test_batched_send_places_and_orders_records_as_one_send_each_would(settings: Settings) -> None:
    assert settings.kafka_bootstrap is not None
    keys = [f"bk_{i:03d}".encode() for i in range(40)]
    # 3,000 records of 600 bytes: several full batches per partition, interleaved keys.
    records = [
        OutgoingRecord(settings.output_topic, keys[n % 40], f"{n:06d}".encode() + b"x" * 594, (("n", str(n).encode()),))
        for n in range(3000)
    ]
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="test-relay")
    try:
        await publisher.send_batched(records)
        # Where one send() per record puts each key: one record per key on the input topic.
        sent = await publisher.send_all([OutgoingRecord(settings.input_topic, key, b"probe") for key in keys])
    finally:
        await publisher.stop()
    expected_partition = {key: metadata.partition for key, metadata in zip(keys, sent, strict=True)}

    received = await read_topic(settings.kafka_bootstrap, settings.output_topic, expected=len(records))
    assert len(received) == len(records)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in received:
        assert r.key is not None and r.value is not None
        assert r.partition == expected_partition[r.key]
        n = int(r.value[:6])
        assert list(r.headers) == [("n", str(n).encode())]
        by_key[r.key].append(n)
    assert by_key == {key: list(range(i, 3000, 40)) for i, key in enumerate(keys)}
