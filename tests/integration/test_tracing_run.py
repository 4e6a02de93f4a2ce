"""`booking-sessions run` as a real process with OTEL_EXPORTER_OTLP_ENDPOINT set: it exports its spans over
OTLP/HTTP (to a receiver this test serves, as Jaeger's port 4318 would) and the output record continues the
input's trace."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from booking_sessions.settings import Settings
from models.trace_context import TraceContext, as_headers
from producer.bookings import as_record
from tests.integration.bookings import event
from tests.integration.harness import Produced, publish, read_json, running_process, sigterm
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[tuple[str, Span]]]]:
    """An OTLP/HTTP trace receiver on loopback: its endpoint, and the (service name, span) pairs it received."""
    received: list[tuple[str, Span]] = []

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
            for scope_spans in resource_spans.scope_spans:
                received.extend((names[0] if names else "", span) for span in scope_spans.spans)
        return web.Response(content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        [port] = {s.getsockname()[1] for s in site._server.sockets}  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


async def test_run_exports_its_spans_over_otlp_and_the_output_continues_the_trace(settings: Settings) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    upstream = TraceContext(f"00-{trace_id}-{span_id}-01")
    record = as_record(event("BookingConfirmed", "bk_run", 0), settings.input_topic)
    await publish(settings, [replace(record, headers=as_headers(upstream))], Produced())

    async with otlp_receiver() as (endpoint, received):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "bs-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans leave at once, not after the default 5 s
        }
        async with running_process(settings, **env) as process:

            async def exported() -> set[str]:
                names = {span.name.split(" ")[0] for _, span in received}
                assert {"process", "create", "send"} <= names, f"spans so far: {sorted(names)}"
                return names

            names = await eventually(exported, what="the service's spans at the OTLP receiver", timeout_s=60)
            stderr = await sigterm(process, timeout_s=30)
        assert process.returncode == 0, stderr.decode()[-2000:]

    assert {"BEGIN;", "COMMIT;"} <= names
    assert {service for service, _ in received} == {"bs-test"}
    [created] = [span for _, span in received if span.name.startswith("create ")]
    assert (created.trace_id.hex(), created.parent_span_id.hex()) == (trace_id, span_id)
    [process_span] = [span for _, span in received if span.name.startswith("process ")]
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in process_span.links] == [(trace_id, span_id)]
    [output] = await read_json(settings, settings.output_topic, 1)
    traceparent = dict(output["headers"])["traceparent"].decode()
    assert traceparent.split("-")[1:3] == [trace_id, created.span_id.hex()]
