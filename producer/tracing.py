"""The relay's spans, after the OpenTelemetry messaging conventions for batch producers: a ``create`` span per
outbox row whose causing event carried a trace context (a child of that context, so in the event's trace; its own
context goes into the record's headers), and one ``send`` span per relay step, linked to each ``create`` span.

With no tracing configured the tracer is the API's no-op one: no span is recorded, and a row that holds a context
(stored while tracing was on) passes it on unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context

from models.trace_context import DEFAULT_MAX_LINKS, TraceContext, of_span


class Links:
    """Adds links to one ``send`` span, up to its limit; nothing when the span is not recording."""

    def __init__(self, span: trace.Span, max_links: int) -> None:
        self._span = span
        self._room = max_links if span.is_recording() else 0

    def add(self, context: trace.SpanContext) -> None:
        """Link the send span to ``context``; an invalid context, or one past the limit, is dropped."""
        if self._room > 0 and context.is_valid:
            self._span.add_link(context)
            self._room -= 1


@contextlib.contextmanager
def sending_span(
    tracer: trace.Tracer, topic: str, message_count: int, max_links: int = DEFAULT_MAX_LINKS
) -> Iterator[Links]:
    """A ``send <topic>`` span (kind CLIENT: the messages' creation contexts are the ``create`` spans, linked) around
    one relay step's send and its acknowledgements; a root, whatever the relay task's context."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": message_count,
    }
    with tracer.start_as_current_span(
        f"send {topic}", context=Context(), kind=trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield Links(span, max_links)


def created(
    tracer: trace.Tracer, cause: TraceContext, topic: str, key: str, message_id: UUID, links: Links
) -> TraceContext | None:
    """A ``create <topic>`` span (kind PRODUCER) for one output record, a child of ``cause`` (the context of the
    event that caused the row); returns its context, for the record's ``traceparent`` header (CONTRACT, "Output":
    the trace of the event that caused it continues), and links the send span to it. None when tracing is off."""
    span = tracer.start_span(
        f"create {topic}",
        context=cause.context,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": key,
            "messaging.message.id": str(message_id),
        },
    )
    span.end()
    links.add(span.get_span_context())
    return of_span(span)
