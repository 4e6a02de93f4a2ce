"""The AsyncAPI 3 document of the service's three topics, generated from the pydantic models of the contract.

``booking-sessions asyncapi --output asyncapi.json`` rewrites the committed copy; tests/unit/test_asyncapi.py fails
when the committed copy is stale. JSON, not YAML: AsyncAPI reads both, and JSON needs no extra dependency.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import core_schema

from booking_sessions.dev.servers import EMBEDDED_PARTITIONS
from booking_sessions.settings import Settings
from models import records
from models.errors import DlqReason
from models.events import SCHEMA_VERSION, BookingEvent, BookingType, SessionEvent, SessionEventType

KAFKA_BINDING_VERSION = "0.5.0"
SCHEMAS = "#/components/schemas/{model}"


class _WrittenInFull(GenerateJsonSchema):
    """Our own output always carries every field (``model_dump_json()`` writes defaults too): all required, but
    those left out when empty (``exclude_if``: ``cancellation_reason``)."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        return field.get("serialization_exclude_if") is None


def _schemas() -> dict[str, Any]:
    # Validation mode for both: it keeps "format: date-time" on timestamps, which serialization mode (a plain
    # serializer returning str) would drop; the output's defaults are written, hence _WrittenInFull.
    _, inputs = models_json_schema([(BookingEvent, "validation")], ref_template=SCHEMAS)
    _, outputs = models_json_schema(
        [(SessionEvent, "validation")], ref_template=SCHEMAS, schema_generator=_WrittenInFull
    )
    return {**inputs["$defs"], **outputs["$defs"]}


def _default(field: str) -> str:
    value = Settings.model_fields[field].default
    assert isinstance(value, str)
    return value


def _typed(schema: str, event_type: str) -> dict[str, Any]:
    return {"allOf": [{"$ref": SCHEMAS.format(model=schema)}, {"properties": {"type": {"const": event_type}}}]}


def _kafka_key(description: str) -> dict[str, Any]:
    return {"kafka": {"key": {"type": "string", "description": description}, "bindingVersion": KAFKA_BINDING_VERSION}}


def _channel(address: str, variable: str, description: str, messages: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "description": f"{description} Default name; configurable with {variable}.",
        "messages": {m[0].lower() + m[1:]: {"$ref": f"#/components/messages/{m}"} for m in messages},
        "bindings": {
            "kafka": {"topic": address, "partitions": EMBEDDED_PARTITIONS, "bindingVersion": KAFKA_BINDING_VERSION}
        },
    }


def _operation(action: str, channel: str, messages: list[str], summary: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/channels/{channel}/messages/{m[0].lower() + m[1:]}"} for m in messages]
    return {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": summary, "messages": refs}


def _messages() -> dict[str, Any]:
    booking_key = _kafka_key("The booking id (UTF-8); booking_id in the value is authoritative.")
    input_summary = {
        "BookingApproved": "Auto-approval or an instructor's approval: ensure the booking's one live session.",
        "BookingConfirmed": "Ensure the live session, the student as LEARNER and the CONFIRMED reservation.",
        "BookingCancelled": "The session ends CANCELLED, for good, and its reservations CANCELLED; before any "
        "approval it creates the session directly as CANCELLED. Optional cancellation_reason (at most 200 chars).",
    }
    output_summary = {
        "SessionCreated": "Once per session ever: message_id is UUIDv5(session id, 'SessionCreated').",
        "SessionUpdated": "A newer booking snapshot changed the details of a session that is not cancelled.",
        "SessionCancelled": "Once per announced session ever: message_id is UUIDv5(session id, 'SessionCancelled'); "
        "session.status is CANCELLED, with cancellation_reason when the booking gave one. A session cancelled "
        "before it was announced is never announced.",
    }
    messages: dict[str, Any] = {}
    for name, summary in input_summary.items():
        messages[name] = {
            "name": name,
            "summary": summary,
            "description": "UTF-8 JSON, at most 64 KiB (BOOKING_MAX_MESSAGE_BYTES). message_id is the idempotency "
            "key. Unknown extra fields are ignored; an unknown type is recorded as ignored; a schema_version above "
            f"{SCHEMA_VERSION} goes to the DLQ as unsupported_version.",
            "contentType": "application/json",
            "payload": _typed("BookingEvent", name),
            "bindings": booking_key,
        }
    for name, summary in output_summary.items():
        messages[name] = {
            "name": name,
            "summary": summary,
            "description": "Published from the outbox at least once, in order per booking; drop repeats by message_id.",
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "message_id": {"type": "string", "format": "uuid", "description": "as in the value"},
                    "traceparent": {
                        "type": "string",
                        "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                        "description": "W3C trace context continuing the trace of the event that caused the message, "
                        "when that event carried one and tracing is on (README, Tracing)",
                    },
                    "tracestate": {"type": "string", "description": "W3C tracestate, with traceparent, when given"},
                },
            },
            "payload": _typed("SessionEvent", name),
            "bindings": booking_key,
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "summary": "An input record that cannot be applied: its key, value and headers unchanged, plus dlq-* headers.",
        "contentType": "application/octet-stream",
        "headers": _dead_letter_headers(),
        "payload": {
            "description": "The original value bytes, unchanged (possibly not JSON, possibly empty); absent when "
            "dlq-value-omitted is set."
        },
        "bindings": _kafka_key("The original key, unchanged (possibly absent)."),
    }
    return messages


def _dead_letter_headers() -> dict[str, Any]:
    text = {"type": "string"}
    digits = {**text, "pattern": "^[0-9]+$"}
    return {
        "type": "object",
        "description": "The original record's headers are kept exactly as they were (a null value as null); "
        "these are added. A copy the DLQ topic refuses for good (too large for it) comes without its value, with "
        "dlq-value-omitted and dlq-value-sha256; refused even so, it comes bare (only dlq-* headers).",
        "required": list(records.DLQ_HEADERS),
        "properties": {
            records.DLQ_REASON: {"type": "string", "enum": list(get_args(DlqReason))},
            records.DLQ_ERROR: {**text, "maxLength": 1024, "description": "a readable message, at most 1 KiB"},
            records.DLQ_SOURCE_TOPIC: text,
            records.DLQ_SOURCE_PARTITION: digits,
            records.DLQ_SOURCE_OFFSET: digits,
            records.DLQ_FAILED_AT: {**text, "format": "date-time"},
            records.DLQ_VALUE_OMITTED: {**digits, "description": "the original value's size in bytes"},
            records.DLQ_VALUE_SHA256: {
                **text,
                "pattern": "^[0-9a-f]{64}$",
                "description": "the original value's SHA-256",
            },
            records.DLQ_KEY_OMITTED: {**digits, "description": "bare copy: the key's size in bytes"},
            records.DLQ_HEADERS_OMITTED: {**digits, "description": "bare copy: headers left out"},
        },
    }


def document() -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document, from the models and the settings' default names."""
    input_topic, output_topic, dlq_topic = (_default(f) for f in ("input_topic", "output_topic", "dlq_topic"))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "booking-sessions",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Booking events in, one live session per booking, "
            "SessionCreated/SessionUpdated/SessionCancelled out, dead letters aside. Generated by "
            "`booking-sessions asyncapi` from models/events.py; the contract is CONTRACT.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "BOOKING_KAFKA_BOOTSTRAP; TLS and SASL through BOOKING_KAFKA_SECURITY_PROTOCOL.",
                "variables": {"bootstrap": {"default": "127.0.0.1:9092"}},
            }
        },
        "channels": {
            "bookingEvents": _channel(
                input_topic,
                "BOOKING_INPUT_TOPIC",
                "Booking events, keyed by booking id, so each booking's events are in order in one partition.",
                list(get_args(BookingType)),
            ),
            "sessionEvents": _channel(
                output_topic,
                "BOOKING_OUTPUT_TOPIC",
                "Session events for the video service, keyed by booking id.",
                list(get_args(SessionEventType)),
            ),
            "deadLetters": _channel(
                dlq_topic, "BOOKING_DLQ_TOPIC", "Input records that cannot be applied.", ["DeadLetter"]
            ),
        },
        "operations": {
            "receiveBookingEvents": {
                **_operation(
                    "receive",
                    "bookingEvents",
                    list(get_args(BookingType)),
                    "Apply each event once, in one PostgreSQL transaction with its inbox row.",
                ),
                "bindings": {
                    "kafka": {
                        "groupId": {"type": "string", "default": _default("group_id")},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            },
            "sendSessionEvents": _operation(
                "send", "sessionEvents", list(get_args(SessionEventType)), "Relayed from the outbox."
            ),
            "sendDeadLetters": _operation(
                "send", "deadLetters", ["DeadLetter"], "Sent before the inbox row commits: at least once."
            ),
        },
        "components": {"messages": _messages(), "schemas": _schemas()},
    }


def render() -> str:
    """The AsyncAPI 3 document as indented JSON text ending in a newline: what `booking-sessions asyncapi` prints
    and what the committed ``asyncapi.json`` must equal (tests/unit/test_asyncapi.py)."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"
