"""The pure parts of tracing: W3C headers in and out, the cause of each outbox row, the spans' shape with the
SDK's in-memory exporter, and when the OTEL_* variables turn tracing on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from booking_sessions.observe.tracing import ChildSpansOnly, link_limit, provider_for, tracing, wanted
from consumer.decide import decide
from consumer.decode import Limits, decode
from consumer.ids import session_cancelled_id, session_created_id, session_id
from consumer.tracing import processing_span
from models.errors import ConfigurationError
from models.records import Decoded, Headers
from models.trace_context import TraceContext, as_headers, from_headers
from producer.bookings import encode
from producer.tracing import created, sending_span
from tests.unit.builders import MAX_BYTES, event, record

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 10, tzinfo=UTC)
ID_A = UUID("00000000-0000-4000-8000-00000000000a")
ID_B = UUID("00000000-0000-4000-8000-00000000000b")
ID_C = UUID("00000000-0000-4000-8000-00000000000c")
LIMITS = Limits(value_bytes=MAX_BYTES)


def link_for(sid: UUID) -> str:
    return f"https://meet.jit.si/{sid}"


def memory_tracer() -> tuple[trace.Tracer, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider.get_tracer("test"), memory


def decoded(message_id: UUID, headers: Headers = ()) -> Decoded:
    return decode(record(encode(event(message_id, T0)), headers=headers), LIMITS)


# --- W3C headers ----------------------------------------------------------------------------------------------


def test_a_valid_traceparent_and_its_tracestate_are_read_from_the_headers() -> None:
    headers = (("x", b"1"), ("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=abc"))

    assert from_headers(headers) == TraceContext(TRACEPARENT, "vendor=abc")
    assert as_headers(from_headers(headers)) == (("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=abc"))


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("tracestate", b"vendor=abc"),),
        (("traceparent", None),),
        (("traceparent", b"not a traceparent"),),
        (("traceparent", b"\xff\xfe"),),
        (("traceparent", b"00-00000000000000000000000000000000-b7ad6b7169203331-01"),),  # the all-zero trace id
        (("Traceparent", TRACEPARENT.encode()),),  # Kafka header names are exact
    ],
)
def test_no_valid_traceparent_is_no_context(headers: Headers) -> None:
    assert from_headers(headers) is None
    assert as_headers(None) == ()


def test_the_first_traceparent_header_counts() -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    headers = (("traceparent", TRACEPARENT.encode()), ("traceparent", other.encode()))

    assert from_headers(headers) == TraceContext(TRACEPARENT)


def test_a_stored_context_round_trips_as_a_span_context() -> None:
    context = TraceContext(TRACEPARENT, "vendor=abc").span_context

    assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == (TRACEPARENT[3:35], TRACEPARENT[36:52])
    assert context.is_remote and context.trace_state.get("vendor") == "abc"


# --- the cause of each outbox row -----------------------------------------------------------------------------


def test_session_created_and_updated_are_caused_by_the_newest_snapshot() -> None:
    first = decide(None, [event(ID_A, T0), event(ID_B, T0 + timedelta(minutes=1))], link_for, NOW)
    [created_row] = first.outbox
    assert (created_row.message_id, created_row.cause) == (session_created_id(session_id("bk_123")), ID_B)

    assert first.session is not None
    later = event(ID_C, T0 + timedelta(minutes=2), title="Geometry")
    [updated] = decide(first.session, [later], link_for, NOW).outbox
    assert (updated.kind, updated.cause) == ("SessionUpdated", ID_C)


def test_session_cancelled_is_caused_by_the_cancellation_not_the_newest_event() -> None:
    current = decide(None, [event(ID_A, T0)], link_for, NOW).session
    cancellation = event(ID_B, T0 + timedelta(minutes=1), type="BookingCancelled")
    newer = event(ID_C, T0 + timedelta(minutes=2))

    [cancelled] = decide(current, [cancellation, newer], link_for, NOW).outbox

    assert (cancelled.message_id, cancelled.cause) == (session_cancelled_id(session_id("bk_123")), ID_B)


# --- spans ----------------------------------------------------------------------------------------------------


def test_with_the_no_op_tracer_nothing_is_recorded_but_the_contexts_travel_on() -> None:
    part = [decoded(ID_A, (("traceparent", TRACEPARENT.encode()),)), decoded(ID_B, ())]

    with processing_span(trace.NoOpTracer(), part, "group") as causes:
        # CONTRACT, Output: the output continues the cause's trace "when that event carried one", traced here or not.
        assert list(causes) == [ID_A]
        assert not trace.get_current_span().get_span_context().is_valid


def test_the_processing_span_links_each_traced_message_up_to_the_limit() -> None:
    tracer, memory = memory_tracer()
    parents = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 4)]
    part = [decoded(ID_A, (("traceparent", parents[0].encode()),)), decoded(ID_B), decoded(ID_C)]
    part[2] = part[2]._replace(record=part[2].record._replace(headers=(("traceparent", parents[2].encode()),)))

    with processing_span(tracer, part, "group", max_links=1) as causes:
        pass

    assert causes == {ID_A: TraceContext(parents[0]), ID_C: TraceContext(parents[2])}
    [span] = memory.get_finished_spans()
    assert span.name == "process booking.events" and span.kind == trace.SpanKind.CONSUMER and span.parent is None
    assert [link.context.trace_id for link in span.links] == [1]
    assert span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 3
    assert span.attributes["messaging.consumer.group.name"] == "group"
    assert span.attributes["booking_sessions.traced_messages"] == 2


def test_the_create_span_is_a_child_of_the_cause_and_the_send_span_links_to_it() -> None:
    tracer, memory = memory_tracer()

    with sending_span(tracer, "session.events", 1) as links:
        context = created(tracer, TraceContext(TRACEPARENT), "session.events", "bk_1", ID_A, links)

    create, send = memory.get_finished_spans()
    assert create.context is not None and create.parent is not None
    assert (
        f"{create.context.trace_id:032x}" == TRACEPARENT[3:35] and f"{create.parent.span_id:016x}" == TRACEPARENT[36:52]
    )
    assert context is not None and context.traceparent.split("-")[2] == f"{create.context.span_id:016x}"
    assert [link.context.span_id for link in send.links] == [create.context.span_id]
    assert send.kind == trace.SpanKind.CLIENT and create.kind == trace.SpanKind.PRODUCER


def test_with_the_no_op_tracer_a_stored_context_passes_on_unchanged() -> None:
    with sending_span(trace.NoOpTracer(), "session.events", 1) as links:
        context = created(trace.NoOpTracer(), TraceContext(TRACEPARENT, "v=1"), "session.events", "bk", ID_A, links)

    assert context == TraceContext(TRACEPARENT, "v=1")


def test_instrumentations_given_child_spans_only_trace_nothing_outside_our_spans() -> None:
    tracer, memory = memory_tracer()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    database = ChildSpansOnly(provider).get_tracer("asyncpg")

    with database.start_as_current_span("SELECT") as orphan:
        assert not orphan.is_recording()
    with tracer.start_as_current_span("process"), database.start_as_current_span("SELECT") as child:
        assert child.is_recording()

    assert [s.name for s in memory.get_finished_spans()] == ["SELECT", "process"]


# --- configuration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "booking-sessions"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask_for_it(environ: dict[str, str], on: bool) -> None:
    assert wanted(environ) is on
    assert (provider_for(environ) is not None) is on


def test_with_no_otel_variable_nothing_is_set_up() -> None:
    with tracing({}) as provider:
        assert provider is None
        assert not trace.get_tracer("x").start_span("y").get_span_context().is_valid  # the API's no-op tracer


def test_the_link_limit_is_the_sdks_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SPAN_LINK_COUNT_LIMIT", raising=False)
    assert link_limit() == 128
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "5")
    assert link_limit() == 5


def test_the_service_name_defaults_to_booking_sessions() -> None:
    provider = provider_for({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None and provider.resource.attributes["service.name"] == "booking-sessions"
    named = provider_for({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "bs-eu"})
    assert named is not None and named.resource.attributes["service.name"] == "bs-eu"


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_or_protocol_not_shipped_is_a_clear_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="OTEL_"):
        provider_for(environ)
