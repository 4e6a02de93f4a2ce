"""Record batches from the wire, read so that one record the Kafka client cannot read never stops a partition.

aiokafka parses each fetched batch in C (``aiokafka.record._crecords``) and decodes header names as strict UTF-8.
A header name that is not UTF-8 (the broker accepts it; some non-Java producers write such names) makes the
parser raise ``UnicodeDecodeError`` from ``getmany``, every time, without saying where: the partition is stuck,
and the records the same ``getmany`` had already parsed are dropped with the exception.

The hook: aiokafka's fetcher builds ``MemoryRecords(raw bytes)`` for every partition of every fetch response, by
that one module-global name. ``install()`` rebinds it to ``LenientMemoryRecords``, which hands the fetcher the
very batches aiokafka parses (its fast C path, unchanged), each wrapped: if reading a record of a batch raises,
the rest of that batch is read again from its raw bytes by the pure-Python ``read_batch`` below, which decodes
header names leniently. A record it can read whole is yielded unchanged; one it cannot is yielded as a record
whose first header is ``UNREADABLE`` (a name strict UTF-8 can never produce) carrying what went wrong, with the
key, value and headers that could be read. ``consumer.loop.to_record`` turns that into ``Record.unreadable`` and
``decode`` into a dead letter ``undecodable`` at the record's own coordinates. Nothing is lost: the records
before it come from the same batch, the ones after it from ``read_batch``, and the fetcher's position moves past
it as for any record.

Why here and not elsewhere: catching the error around ``getmany`` cannot tell which partition failed and loses the
records parsed before it; a second fetch of raw bytes would need aiokafka's private client. Rebinding one name
the fetcher looks up per fetch keeps aiokafka's own fetch, offsets, transactions and C parser; only a batch that
fails pays for the Python reader. It serves every consumer in the process alike (``run``, ``replay``, the
DLQ tools), on every broker (the bytes are Kafka's record format v2, whatever wrote them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import aiokafka.consumer.fetcher as fetcher
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

from models.faults import first_line
from models.records import Headers

# A lone surrogate: strict UTF-8 decoding (aiokafka's and ours) never yields one, so no real header has this name.
UNREADABLE = "\udcffunreadable"

# Kafka's record batch v2 header: baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes,
# lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, records count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_LENGTH = struct.Struct(">i")
_LOG_OVERHEAD = 12  # baseOffset and batchLength precede the length they give
_CODECS: dict[int, Callable[[bytes], bytes]] = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
_LOG_APPEND_TIME = 0x08


class WireRecord(NamedTuple):
    """What aiokafka's fetcher reads from a record (the attributes of its own record type)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


def install() -> None:
    """Make every aiokafka consumer of this process read batches through ``LenientMemoryRecords``; idempotent.
    Call before a consumer fetches (``service``, ``replay`` and the DLQ tools do)."""
    fetcher.MemoryRecords = LenientMemoryRecords


def unreadable_header(what: str) -> tuple[str, bytes]:
    """The header that marks a record as unreadable: ``(UNREADABLE, what)``, ``what`` (why) as UTF-8 with any
    unpaired surrogate backslash-escaped. Read by ``consumer.client.to_record`` into ``Record.unreadable``."""
    return (UNREADABLE, what.encode("utf-8", "backslashreplace"))


class LenientMemoryRecords:
    """aiokafka's ``MemoryRecords`` over the same bytes, each batch wrapped in ``LenientBatch``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._inner = MemoryRecords(data)
        self._pos = 0  # where the inner reader's next batch starts

    def size_in_bytes(self) -> int:
        """The fetched bytes' length, as aiokafka's reader reports it."""
        return int(self._inner.size_in_bytes())

    def has_next(self) -> bool:
        """Whether another batch starts after the last one read."""
        return bool(self._inner.has_next())

    def next_batch(self) -> LenientBatch | None:
        """The next batch, wrapped so that a record aiokafka cannot read becomes an unreadable record at its offset
        (CONTRACT "Dead letters": ``undecodable``); None after the last one."""
        batch = self._inner.next_batch()
        if batch is None:
            return None
        # The inner reader cut the batch at the same length field; only a failing batch is sliced out.
        start = self._pos
        (length,) = _LENGTH.unpack_from(self._data, start + 8)
        self._pos = start + _LOG_OVERHEAD + length
        return LenientBatch(batch, self._data, start, self._pos)


class LenientBatch:
    """One batch as aiokafka reads it, until a record fails; then the rest through ``read_batch``."""

    def __init__(self, inner: Any, data: bytes, start: int, end: int) -> None:
        self._inner = inner
        self._data = data
        self._start = start
        self._end = end
        self._crc_ok = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # base_offset, next_offset, producer_id, is_control_batch, ...

    def validate_crc(self) -> bool:
        """Always True: the checksum's verdict is kept, and ``__iter__`` turns a failing batch into one unreadable
        record instead of aiokafka's exception."""
        # A batch that fails its checksum is not parsed (it cannot be trusted), but it must not stop the partition
        # either: __iter__ yields one unreadable record for it.
        self._crc_ok = bool(self._inner.validate_crc())
        return True

    def __next__(self) -> Any:
        return next(self._inner)  # control batches only (the fetcher reads their marker this way)

    def __iter__(self) -> Iterator[Any]:
        if not self._crc_ok:
            yield _whole_batch(self._inner, "the batch failed its CRC check")
            return
        read = 0
        try:
            for record in self._inner:
                yield record
                read += 1
        except Exception as error:  # whatever aiokafka could not read: read the rest ourselves, leniently
            rest = self._read_rest(read)
            yield from (
                rest
                if rest is not None
                else [_whole_batch(self._inner, f"unreadable ({type(error).__name__}: {first_line(error, 280)})")]
            )

    def _read_rest(self, skip: int) -> list[WireRecord] | None:
        """The records after the first ``skip``; None: not even the batch header can be read (or it is of the
        old formats, v0 and v1, which have no headers and only break where nothing can be read)."""
        if getattr(self._inner, "magic", 2) < 2:
            return None
        try:
            return list(read_batch(self._data[self._start : self._end], skip=skip))
        except Exception:
            return None


def _whole_batch(batch: Any, why: str) -> WireRecord:
    """One unreadable record for a batch none of whose records can be read: at its last offset, so that the
    fetcher, which skips records below its position, never skips it."""
    last = int(batch.next_offset) - 1
    first = getattr(batch, "base_offset", last)
    what = f"{why}: records {first} to {last} could not be read"
    timestamp, timestamp_type = getattr(batch, "max_timestamp", -1), getattr(batch, "timestamp_type", 0) or 0
    return WireRecord(last, timestamp, timestamp_type, None, None, [unreadable_header(what)])


def read_batch(raw: bytes, skip: int = 0) -> Iterator[WireRecord]:
    """Pure: the records of one v2 batch (``raw``: its bytes from baseOffset on), the first ``skip`` left out.

    Header names that are not UTF-8 do not stop it: such a record comes with an ``UNREADABLE`` first header. A
    record whose structure is broken ends the batch with one unreadable record for the rest of it.
    """
    fields = _HEADER.unpack_from(raw)
    base_offset, attributes, last_delta = fields[0], fields[5], fields[6]
    first_ts, max_ts, count = fields[7], fields[8], fields[12]
    ts_type = 1 if attributes & _LOG_APPEND_TIME else 0
    last = base_offset + last_delta
    try:
        body = raw[_HEADER.size :]
        codec = attributes & 0x07
        if codec:
            body = _CODECS[codec](body)
    except Exception as error:
        why = f"the batch cannot be decompressed ({type(error).__name__})"
        what = f"{why}: records {base_offset} to {last} could not be read"
        yield WireRecord(last, max_ts, ts_type, None, None, [unreadable_header(what)])
        return
    pos = 0
    for index in range(count):
        try:
            record, pos = _read_record(body, pos, base_offset, first_ts, max_ts, ts_type)
        except Exception as error:
            what = f"record {index} of the batch is malformed ({error!r}): records from it to {last} could not be read"
            yield WireRecord(last, max_ts, ts_type, None, None, [unreadable_header(what)])
            return
        if index >= skip:
            yield record


def _read_record(
    body: bytes, pos: int, base_offset: int, first_ts: int, max_ts: int, ts_type: int
) -> tuple[WireRecord, int]:
    """One record of a v2 batch at ``pos``; the record and where the next one starts."""
    length, pos = decode_varint(body, pos)
    end = pos + length
    if length < 0 or end > len(body):
        raise ValueError(f"record length {length} runs past the batch")
    pos += 1  # attributes: unused in v2
    ts_delta, pos = decode_varint(body, pos)
    offset_delta, pos = decode_varint(body, pos)
    key, pos = _nullable_bytes(body, pos)
    value, pos = _nullable_bytes(body, pos)
    header_count, pos = decode_varint(body, pos)
    if header_count < 0:
        raise ValueError(f"header count {header_count}")
    headers: list[tuple[str, bytes | None]] = []
    unreadable: list[str] = []
    for index in range(header_count):
        name, pos = _nullable_bytes(body, pos)
        header_value, pos = _nullable_bytes(body, pos)
        try:
            headers.append(((name if name is not None else b"\xff").decode("utf-8"), header_value))
        except UnicodeDecodeError:
            unreadable.append(f"header {index} name is not UTF-8: {name!r}")  # None: a null name
    if pos != end:
        raise ValueError(f"record length {length} does not match its fields")
    timestamp = max_ts if ts_type == 1 else first_ts + ts_delta
    if unreadable:
        headers.insert(0, unreadable_header("; ".join(unreadable) + " (left out of the dead letter)"))
    return WireRecord(base_offset + offset_delta, timestamp, ts_type, key, value, headers), end


def _nullable_bytes(body: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(body, pos)
    if size < 0:
        return None, pos
    if pos + size > len(body):
        raise ValueError(f"a field of {size} bytes runs past the record")
    return bytes(body[pos : pos + size]), pos + size


def split_unreadable(headers: Headers) -> tuple[Headers, str | None]:
    """The record's real headers, and what could not be read of it (None: all of it could)."""
    if headers and headers[0][0] == UNREADABLE:
        what = headers[0][1] or b""
        return headers[1:], what.decode("utf-8", "replace")
    return headers, None
