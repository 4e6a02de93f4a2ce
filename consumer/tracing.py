"""The processing span of one transaction part, after the OpenTelemetry messaging conventions for batch consumers:
one ``process`` span per transaction, with a link to each message's own context (W3C headers), the database
spans of the transaction beneath it.

With no tracing configured the tracer is the API's no-op one: the span is invalid and records nothing, but the
messages' own contexts are still passed on to the outbox rows they cause, so that the output continues the input's
trace whether or not this service reports spans (CONTRACT, Output: "a W3C traceparent header continuing the trace of
the event that caused it, when that event carried one"). Only records that have headers are looked at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context

from models.records import Decoded
from models.trace_context import DEFAULT_MAX_LINKS, TraceContext, from_headers


@contextlib.contextmanager
def processing_span(
    tracer: trace.Tracer, part: Sequence[Decoded], consumer_group: str | None, max_links: int = DEFAULT_MAX_LINKS
) -> Iterator[dict[UUID, TraceContext]]:
    """A ``process <topic>`` span (kind CONSUMER, a root: the messages' contexts are links, not parents) around one
    transaction of ``part``; current while it runs, so the database spans are its children. Yields the trace
    context of each message of the part that carried one, by message id, for the outbox rows they cause (CONTRACT,
    "Output": each output record continues its cause's trace); with tracing off as well (the span is invalid and
    nothing is recorded, but the contexts travel on)."""
    topic = part[0].record.topic if part else ""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": len(part),
    }
    if consumer_group is not None:
        attributes["messaging.consumer.group.name"] = consumer_group
    with tracer.start_as_current_span(
        f"process {topic}", context=Context(), kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        contexts = message_contexts(part)
        if span.is_recording():
            for context in list(contexts.values())[:max_links]:
                span.add_link(context.span_context)
            span.set_attribute("booking_sessions.traced_messages", len(contexts))
        yield contexts


def message_contexts(part: Sequence[Decoded]) -> dict[UUID, TraceContext]:
    """The W3C trace context of each message that carried a valid one, by message id (a record without a readable
    message id has no inbox row and causes no outbox row)."""
    contexts = {}
    for d in part:
        if d.message_id is not None and d.record.headers and (context := from_headers(d.record.headers)) is not None:
            contexts[d.message_id] = context
    return contexts
