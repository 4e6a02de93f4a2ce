"""consumer.wire: a record aiokafka cannot read (a header name that is not UTF-8) comes out of the fetcher as an
unreadable record at its own offset, between its neighbours, and decodes to a dead letter ``undecodable``."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import aiokafka.consumer.fetcher as fetcher
import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.util import calc_crc32c

from consumer.client import to_record
from consumer.decode import decode
from consumer.wire import LenientMemoryRecords, install, read_batch
from models.records import Record
from tests.raw_headers import raw_name
from tests.unit.builders import MAX_BYTES

TP = TopicPartition("booking.events", 4)
BAD_NAME = b"tr\xffce"  # issue 12's header name


WireHeaders = list[tuple[str, bytes | None]]
Spec = tuple[bytes | None, bytes | None, WireHeaders]


def batch(
    records: Sequence[Spec],
    *,
    base_offset: int = 100,
    compression: int = 0,
) -> bytes:
    """One v2 batch as a broker returns it: the records at ``base_offset`` and after."""
    builder = _DefaultRecordBatchBuilderPy(
        magic=2, compression_type=compression, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, 1_764_000_000_000 + i, key, value, headers)
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)  # the broker assigns the base offset; the CRC does not cover it
    return bytes(data)


def fetched(data: bytes, fetch_offset: int = 100) -> list[Record]:
    """What getmany hands the loop for one partition's fetch response, through the fetcher's own code."""
    install()
    records = fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [], fetch_offset, None, None, True, 0)
    return [to_record(m) for m in records]


THREE: list[Spec] = [
    (b"bk_before", b'{"n": 0}', []),
    (b"bk_hkey", b'{"n": 1}', [("ok", b"1"), (raw_name(BAD_NAME), b"v"), ("null", None)]),
    (b"bk_after", b'{"n": 2}', [("traceparent", b"00-x")]),
]


@pytest.mark.parametrize("compression", [0, 1], ids=["plain", "gzip"])
def test_a_header_name_that_is_not_utf8_is_one_unreadable_record_between_its_neighbours(compression: int) -> None:
    records = fetched(batch(THREE, compression=compression))

    assert [(r.offset, r.key, r.value) for r in records] == [
        (100, b"bk_before", b'{"n": 0}'),
        (101, b"bk_hkey", b'{"n": 1}'),
        (102, b"bk_after", b'{"n": 2}'),
    ]
    before, bad, after = records
    assert (before.unreadable, after.unreadable) == (None, None)
    assert after.headers == (("traceparent", b"00-x"),)
    assert bad.headers == (("ok", b"1"), ("null", None))  # what could be read, null kept
    assert bad.unreadable == "header 1 name is not UTF-8: b'tr\\xffce' (left out of the dead letter)"
    assert bad.timestamp_ms == 1_764_000_000_001
    d = decode(bad, MAX_BYTES)
    assert (d.outcome, d.reason, d.error, d.message_id) == ("dead_lettered", "undecodable", bad.unreadable, None)


def test_without_the_hook_aiokafka_raises_as_issue_12_saw() -> None:
    plain = fetcher.PartitionRecords(TP, LenientMemoryRecords(batch(THREE))._inner, [], 100, None, None, True, 0)

    with pytest.raises(UnicodeDecodeError):
        list(plain)


def test_records_before_the_fetch_offset_are_skipped_as_aiokafka_does() -> None:
    assert [r.offset for r in fetched(batch(THREE), fetch_offset=101)] == [101, 102]
    assert [r.offset for r in fetched(batch(THREE), fetch_offset=102)] == [102]


def test_a_good_batch_is_read_by_aiokafka_unchanged() -> None:
    good: list[Spec] = [(b"k", b"v", [("a", None), ("b", b"")])] * 3

    assert [(r.offset, r.headers, r.unreadable) for r in fetched(batch(good))] == [
        (100, (("a", None), ("b", b"")), None),
        (101, (("a", None), ("b", b"")), None),
        (102, (("a", None), ("b", b"")), None),
    ]


def test_two_batches_in_one_fetch_the_first_one_bad() -> None:
    later: list[Spec] = [(b"k", b"later", [])]
    data = batch(THREE) + batch(later, base_offset=103)

    assert [(r.offset, r.unreadable is not None) for r in fetched(data)] == [
        (100, False),
        (101, True),
        (102, False),
        (103, False),
    ]


def test_a_batch_that_fails_its_crc_is_one_unreadable_record_at_its_last_offset() -> None:
    data = bytearray(batch(THREE[:1] + THREE[2:]))
    data[-1] ^= 0xFF

    [record] = fetched(bytes(data))

    assert (record.offset, record.key, record.value) == (101, None, None)
    assert record.unreadable == "the batch failed its CRC check: records 100 to 101 could not be read"


def test_a_malformed_record_ends_its_batch_with_one_unreadable_record() -> None:
    two: list[Spec] = [(b"k", b"v", []), (b"k", b"v", [])]
    data = bytearray(batch(two))
    # The second record's header count (its last byte) says 5 headers that are not there.
    data[-1] = 10  # zigzag varint of 5
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))

    records = fetched(bytes(data))

    assert [r.offset for r in records] == [100, 101]
    assert records[0].unreadable is None
    assert records[1].unreadable is not None
    assert records[1].unreadable.startswith("record 1 of the batch is malformed")


def test_read_batch_reads_every_record_like_aiokafka() -> None:
    good: list[Spec] = [(b"k%d" % i, None if i % 2 else b"v", [("h", None)]) for i in range(5)]

    assert [(r.offset, r.key, r.value, r.headers) for r in read_batch(batch(good))] == [
        (100 + i, b"k%d" % i, None if i % 2 else b"v", [("h", None)]) for i in range(5)
    ]


def test_a_batch_that_cannot_be_decompressed_is_one_unreadable_record_at_its_last_offset() -> None:
    # zstd, as a Java producer may send it, on plain bytes: aiokafka cannot decompress it (nor could anyone).
    data = bytearray(batch(THREE))
    struct.pack_into(">h", data, 21, 4)
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))

    [record] = fetched(bytes(data))

    assert (record.offset, record.key, record.value, record.headers) == (102, None, None, ())
    assert record.unreadable is not None
    assert record.unreadable.startswith("the batch cannot be decompressed (")
    assert record.unreadable.endswith("): records 100 to 102 could not be read")
