"""Traces through the outbox (CONTRACT "Output": the output record carries a traceparent continuing the trace of
the event that caused it): real broker, real PostgreSQL, spans kept in memory by the SDK's InMemorySpanExporter."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from booking_sessions.observe.tracing import instrument_database, uninstrument_database
from booking_sessions.service import open_service
from booking_sessions.settings import Settings
from models.events import BookingEvent
from models.records import OutgoingRecord
from models.trace_context import as_headers, of_span
from producer.bookings import as_record, booking_event
from tests.integration.harness import Produced, consume_all, publish, read_json
from tests.integration.operator_cli import invoke

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TRACESTATE = "vendor=abc"


@dataclass(frozen=True)
class Traces:
    provider: TracerProvider
    memory: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())


@pytest.fixture(scope="module")
def every_trace() -> Iterator[Traces]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrument_database(provider)  # process-wide while this module runs, as `run` does when tracing is on
    try:
        yield Traces(provider, memory)
    finally:
        uninstrument_database()
        provider.shutdown()


@pytest.fixture
def traces(every_trace: Traces) -> Traces:
    every_trace.memory.clear()
    return every_trace


def event(kind: str, booking: str, minute: int, **overrides: Any) -> BookingEvent:
    fields: dict[str, Any] = {
        "student_id": f"student-{booking}",
        "instructor_id": "u_7",
        "scheduled_start": T0 + timedelta(days=7),
        "duration_minutes": 60,
        "occurred_at": T0 + timedelta(minutes=minute),
        **overrides,
    }
    return booking_event(kind, booking, **fields)  # type: ignore[arg-type]


def traced(record: OutgoingRecord, provider: trace.TracerProvider) -> tuple[OutgoingRecord, trace.SpanContext]:
    """The record as an upstream producer would send it: inside its own ``send`` span, whose context it carries."""
    tracer = provider.get_tracer("test-upstream")
    with tracer.start_as_current_span(f"send {record.topic}", kind=trace.SpanKind.PRODUCER) as span:
        context = of_span(span)
        assert context is not None
        headers = as_headers(context._replace(tracestate=TRACESTATE))
    return replace(record, headers=headers), span.get_span_context()


async def run_through(settings: Settings, records: Sequence[OutgoingRecord], provider: Any) -> None:
    produced = Produced()
    await publish(settings, records, produced)
    async with open_service(settings, tracer_provider=provider) as service:
        await consume_all(service, produced)
        await service.relay.drain()


def header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    values = [value.decode() for key, value in headers if key == name]
    assert len(values) <= 1, headers
    return values[0] if values else None


def trace_id_of(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


def spans_named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def span_tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as indented trees, one per trace, links shown: what the report shows."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    names = {s.context.span_id: s.name for s in spans if s.context is not None}
    ids = set(names)
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        assert span.context is not None
        remote = " (parent in another process)" if span.parent is not None and span.parent.span_id not in ids else ""
        targets = [names.get(link.context.span_id, "elsewhere") for link in span.links]
        links = f" [links -> {', '.join(targets)}]" if targets else ""
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        lines.append(
            f"{'  ' * depth}{span.name} ({span.kind.name.lower()}, trace {span.context.trace_id:032x}, "
            f"{ms:.1f} ms){links}{remote}"
        )
        for child in by_parent.get(span.context.span_id, []):
            walk(child, depth + 1)

    for root in by_parent.get(None, []):
        walk(root, 0)
    return "\n".join(lines)


async def test_session_created_continues_the_trace_of_the_event_that_caused_it(
    settings: Settings, traces: Traces
) -> None:
    record, upstream = traced(
        as_record(event("BookingConfirmed", "bk_traced", 0), settings.input_topic), traces.provider
    )
    untraced = as_record(event("BookingConfirmed", "bk_plain", 0), settings.input_topic)

    await run_through(settings, [record, untraced], traces.provider)

    spans = traces.spans()
    print("\n" + span_tree(spans))
    [process] = spans_named(spans, f"process {settings.input_topic}")
    assert process.kind == trace.SpanKind.CONSUMER and process.parent is None
    assert [link.context.span_id for link in process.links] == [upstream.span_id]
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.destination.name"] == settings.input_topic
    assert process.attributes["messaging.consumer.group.name"] == settings.group_id
    assert process.attributes["messaging.batch.message_count"] == 2
    assert process.context is not None
    database = [s for s in spans if s.attributes and s.attributes.get("db.system") == "postgresql"]
    beneath = [s for s in database if s.parent is not None and s.parent.span_id == process.context.span_id]
    # The transaction's statements, in order: the inbox with the session locks, then the decisions' writes (the
    # sessions, learners and outbox rows: consumer/store.py); before them the pool's ping when the connection sat
    # idle for over a second (booking_sessions/database_pool.py: a slow group join on Tansu, say).
    beneath.sort(key=lambda s: s.start_time or 0)
    names = [s.name for s in beneath]
    if names[:3] == ["BEGIN;", ";", "ROLLBACK;"]:
        names = names[3:]
    assert names == ["BEGIN;", "WITH", "WITH", "COMMIT;"]
    assert all(s.context is not None and s.context.trace_id == process.context.trace_id for s in beneath)
    # The relay's polls, the pool's checks outside a batch: no stray root spans of their own.
    assert all(s.parent is not None for s in database)

    [created] = spans_named(spans, f"create {settings.output_topic}")
    assert created.context is not None and created.parent is not None
    assert (created.context.trace_id, created.parent.span_id) == (upstream.trace_id, upstream.span_id)
    assert created.attributes is not None and created.attributes["messaging.kafka.message.key"] == "bk_traced"
    [send] = spans_named(spans, f"send {settings.output_topic}")
    assert [link.context.span_id for link in send.links] == [created.context.span_id]

    outputs = {m["key"]: m for m in await read_json(settings, settings.output_topic, 2)}
    traced_headers = outputs[b"bk_traced"]["headers"]
    assert outputs[b"bk_traced"]["body"]["type"] == "SessionCreated"
    traceparent = header(traced_headers, "traceparent")
    assert traceparent is not None
    _, trace_id, span_id, _ = traceparent.split("-")
    assert (int(trace_id, 16), int(span_id, 16)) == (created.context.trace_id, created.context.span_id)
    assert header(traced_headers, "tracestate") == TRACESTATE
    assert header(traced_headers, "message_id") == outputs[b"bk_traced"]["body"]["message_id"]
    # The event without a trace context: its record carries none either (CONTRACT: "when that event carried one").
    assert [name for name, _ in outputs[b"bk_plain"]["headers"]] == ["message_id"]


async def test_session_cancelled_continues_the_trace_of_the_cancellation(settings: Settings, traces: Traces) -> None:
    approved, _ = traced(as_record(event("BookingApproved", "bk_c", 0), settings.input_topic), traces.provider)
    await run_through(settings, [approved], traces.provider)
    cancelled, cancellation = traced(
        as_record(event("BookingCancelled", "bk_c", 5), settings.input_topic), traces.provider
    )

    await run_through(settings, [cancelled], traces.provider)

    outputs = {m["body"]["type"]: m for m in await read_json(settings, settings.output_topic, 2)}
    traceparent = header(outputs["SessionCancelled"]["headers"], "traceparent")
    assert traceparent is not None and trace_id_of(traceparent) == cancellation.trace_id
    created = header(outputs["SessionCreated"]["headers"], "traceparent")
    assert created is not None and trace_id_of(created) != cancellation.trace_id


async def test_a_republished_record_continues_the_same_trace(settings: Settings, traces: Traces) -> None:
    confirmed, upstream = traced(
        as_record(event("BookingConfirmed", "bk_again", 0), settings.input_topic), traces.provider
    )
    await run_through(settings, [confirmed], traces.provider)

    result = await invoke(settings, "outbox", "republish", "--booking", "bk_again", "--relay")

    assert result.exit_code == 0, result.output
    first, again = await read_json(settings, settings.output_topic, 2)
    assert first["body"] == again["body"]
    for record in (first, again):
        traceparent = header(record["headers"], "traceparent")
        assert traceparent is not None and trace_id_of(traceparent) == upstream.trace_id


async def test_a_dead_letter_keeps_the_traceparent_header_exactly(settings: Settings, traces: Traces) -> None:
    broken = OutgoingRecord(settings.input_topic, b"bk_bad", b'{"not": "an event"}')
    record, _ = traced(broken, traces.provider)

    await run_through(settings, [record], traces.provider)

    [dead] = await read_json_raw(settings, settings.dlq_topic)
    assert dead["headers"][: len(record.headers)] == list(record.headers)
    assert header(dead["headers"], "dlq-reason") == "invalid"


async def test_tracing_off_records_no_span_but_the_output_continues_the_trace(
    settings: Settings, traces: Traces
) -> None:
    record, upstream = traced(as_record(event("BookingConfirmed", "bk_off", 0), settings.input_topic), traces.provider)
    untraced = as_record(event("BookingConfirmed", "bk_off_plain", 0), settings.input_topic)
    traces.memory.clear()

    await run_through(settings, [record, untraced], None)  # the global provider: the API's no-op one here

    assert traces.spans() == []
    outputs = {o["key"]: o for o in await read_json(settings, settings.output_topic, 2)}
    # Passed on as it came (CONTRACT, Output): the same trace, the upstream span as the parent.
    assert dict(outputs[b"bk_off"]["headers"]) == {
        "message_id": dict(outputs[b"bk_off"]["headers"])["message_id"],
        "traceparent": dict(record.headers)["traceparent"],
        "tracestate": dict(record.headers)["tracestate"],
    }
    assert f"{upstream.trace_id:032x}" in dict(outputs[b"bk_off"]["headers"])["traceparent"].decode()
    assert [name for name, _ in outputs[b"bk_off_plain"]["headers"]] == ["message_id"]


async def read_json_raw(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """The DLQ's records: their values are the original bytes, not necessarily JSON."""
    from booking_sessions.topics import read_topic

    assert settings.kafka_bootstrap is not None
    records = await read_topic(settings.kafka_bootstrap, topic, expected=1, timeout_s=20)
    return [{"key": r.key, "value": r.value, "headers": list(r.headers or ())} for r in records]
