"""Tracing with OpenTelemetry, configured only by the standard ``OTEL_*`` environment variables.

Off unless asked for: with none set (or ``OTEL_SDK_DISABLED=true``, or ``OTEL_TRACES_EXPORTER=none``) nothing is
set up, the code runs against the API's no-op tracer, and no record is looked at for its trace context. On when
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): then an SDK tracer provider exports in
batches over OTLP/HTTP (protobuf), and asyncpg's statements become spans beneath the span that issued them. The SDK
reads the rest itself: ``OTEL_SERVICE_NAME`` (default here ``booking-sessions``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_SPAN_LINK_COUNT_LIMIT``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_*``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.util.types import Attributes

from models.errors import ConfigurationError
from models.trace_context import DEFAULT_MAX_LINKS

if TYPE_CHECKING:  # the SDK is imported only when tracing is on: ~50 ms less for every other command
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

DEFAULT_SERVICE_NAME = "booking-sessions"
_EXPORTERS = ("otlp", "console")


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for tracing (see the module); raises ConfigurationError for an
    exporter or protocol this service does not ship."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporters(environ)
    if exporters is not None:
        return bool(exporters)
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters(environ: Mapping[str, str]) -> list[str] | None:
    """``OTEL_TRACES_EXPORTER`` as a list (empty: ``none``); None when it is not set."""
    value = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not value:
        return None
    names = [name.strip() for name in value.split(",") if name.strip() and name.strip() != "none"]
    unknown = sorted(set(names) - set(_EXPORTERS))
    if unknown:
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} not supported (use otlp or console)")
    return names


def provider_for(environ: Mapping[str, str]) -> TracerProvider | None:
    """An SDK tracer provider with the exporters the environment asks for, or None when tracing is off. Sets
    nothing global (``start`` does)."""
    if not wanted(environ):
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol not in (None, "", "http/protobuf"):
        raise ConfigurationError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf is supported")
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    for name in _exporters(environ) or ["otlp"]:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*


@contextlib.contextmanager
def tracing(environ: Mapping[str, str] = os.environ) -> Iterator[TracerProvider | None]:
    """Tracing for one process (``run``, ``replay``), set up from ``environ``: the provider made global and
    asyncpg instrumented while it lasts, the spans still buffered exported on leaving. Yields None when off."""
    provider = provider_for(environ)
    if provider is None:
        yield None
        return
    trace.set_tracer_provider(provider)
    instrument_database(provider)
    try:
        yield provider
    finally:
        uninstrument_database()
        provider.shutdown()  # exports what is buffered; each export is bounded by OTEL_EXPORTER_OTLP_TIMEOUT


def link_limit() -> int:
    """Links a span may hold: ``OTEL_SPAN_LINK_COUNT_LIMIT``, else the SDK's default."""
    if not os.environ.get("OTEL_SPAN_LINK_COUNT_LIMIT"):
        return DEFAULT_MAX_LINKS
    from opentelemetry.sdk.trace import SpanLimits

    limit = SpanLimits().max_links
    return DEFAULT_MAX_LINKS if limit is None else limit


def instrument_database(provider: trace.TracerProvider) -> None:
    """A span per asyncpg statement (SQLAlchemy's dialect runs prepared statements, BEGIN and COMMIT through it),
    only beneath a span of ours: the metrics sampler, retention and an idle relay poll open no traces."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    # The instrumentation package has no type hints; its BaseInstrumentor is a singleton.
    AsyncPGInstrumentor().instrument(tracer_provider=ChildSpansOnly(provider))  # type: ignore[no-untyped-call]


def uninstrument_database() -> None:
    """Undo ``instrument_database`` (the instrumentor is process-wide: tests and the end of ``tracing()``)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]  # untyped, as above


class ChildSpansOnly(trace.TracerProvider):
    """A provider whose tracers start a span only when there is a parent span: an instrumentation given it traces
    the work done inside our spans and nothing else."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        """The wrapped provider's tracer (same arguments), starting spans only beneath a valid parent span."""
        return _ChildTracer(self._provider.get_tracer(*args, **kwargs))


class _ChildTracer(trace.Tracer):
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self._tracer.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # the API's own decorator is private
        self, name: str, context: Context | None = None, *args: Any, end_on_exit: bool = True, **kwargs: Any
    ) -> Iterator[trace.Span]:
        """As the API's: ``start_span``'s arguments, the span current while the block runs."""
        span = self.start_span(name, context, *args, **kwargs)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=kwargs.get("record_exception", True),
            set_status_on_exception=kwargs.get("set_status_on_exception", True),
        ) as current:
            yield current
