"""W3C trace context on Kafka records and outbox rows (CONTRACT "Output": each output record carries a
``traceparent`` continuing the trace of the event that caused it, when that event carried one).

Only the W3C ``traceparent`` and ``tracestate`` headers: the contract names them, and they are what the outbox
stores. Both values are parsed and written again by OpenTelemetry's W3C propagator, so a malformed header counts as
none, and what is stored or sent is always well formed. Works with the OpenTelemetry API alone (no SDK needed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HeaderPairs = Iterable[tuple[str, bytes | None]]  # a Kafka record's headers, as models.records.Headers

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_W3C = TraceContextTextMapPropagator()
# The SDK's default OTEL_SPAN_LINK_COUNT_LIMIT: links past the limit would be dropped by the SDK, so the consumer and
# the relay do not build them (the service passes the configured limit).
DEFAULT_MAX_LINKS = 128


class TraceContext(NamedTuple):
    """A span's W3C context as header text: ``traceparent`` (``00-<trace id>-<span id>-<flags>``) and
    ``tracestate`` (None: none)."""

    traceparent: str
    tracestate: str | None = None

    @property
    def context(self) -> Context:
        """As an OpenTelemetry context whose current span is this one (remote), to start children under."""
        carrier = {TRACEPARENT: self.traceparent}
        if self.tracestate is not None:
            carrier[TRACESTATE] = self.tracestate
        return _W3C.extract(carrier)

    @property
    def span_context(self) -> trace.SpanContext:
        """The span context, e.g. for a link."""
        return trace.get_current_span(self.context).get_span_context()


def from_headers(headers: HeaderPairs) -> TraceContext | None:
    """The trace context a record's headers carry: the first ``traceparent`` and ``tracestate`` headers, or None
    when there is no valid ``traceparent`` (absent, null, not W3C: such a record simply carries no context)."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        if name in (TRACEPARENT, TRACESTATE) and value is not None and name not in carrier:
            carrier[name] = value.decode("latin-1")  # never fails; the propagator rejects what is not W3C text
    if TRACEPARENT not in carrier:
        return None
    return of_span(trace.get_current_span(_W3C.extract(carrier)))


def of_span(span: trace.Span) -> TraceContext | None:
    """The span's context as header text; None for an invalid one (no tracing configured)."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(span))
    return TraceContext(carrier[TRACEPARENT], carrier.get(TRACESTATE))


def as_headers(context: TraceContext | None) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers for ``context``: ``traceparent``, then ``tracestate`` when there is one; none for None."""
    if context is None:
        return ()
    headers: tuple[tuple[str, bytes], ...] = ((TRACEPARENT, context.traceparent.encode()),)
    if context.tracestate is not None:
        headers += ((TRACESTATE, context.tracestate.encode()),)
    return headers
