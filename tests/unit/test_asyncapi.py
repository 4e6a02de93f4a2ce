"""The committed AsyncAPI document is the one the models generate, and it describes the contract's topics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from booking_sessions.cli import app
from booking_sessions.dev.asyncapi import document, render
from booking_sessions.settings import Settings
from models.errors import DlqReason

COMMITTED = Path(__file__).resolve().parents[2] / "asyncapi.json"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def test_the_committed_file_is_not_stale() -> None:
    assert COMMITTED.read_text() == render(), (
        "asyncapi.json differs from what the models generate: run `booking-sessions asyncapi --output asyncapi.json`"
    )


def test_the_command_prints_the_document_and_writes_it(tmp_path: Path) -> None:
    printed = CliRunner().invoke(app, ["asyncapi"])
    assert printed.exit_code == 0 and json.loads(printed.stdout) == document()
    written = CliRunner().invoke(app, ["asyncapi", "--output", str(tmp_path / "out.json")])
    assert written.exit_code == 0 and (tmp_path / "out.json").read_text() == render()


def test_three_channels_on_the_default_topics(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    addresses = {name: channel["address"] for name, channel in doc["channels"].items()}
    defaults = Settings.model_fields
    assert addresses == {
        "bookingEvents": defaults["input_topic"].default,
        "sessionEvents": defaults["output_topic"].default,
        "deadLetters": defaults["dlq_topic"].default,
    }
    assert {op["action"] for op in doc["operations"].values()} == {"receive", "send"}
    assert doc["operations"]["receiveBookingEvents"]["channel"] == {"$ref": "#/channels/bookingEvents"}


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc)
    assert len(refs) > 10
    for ref in refs:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


def test_input_schema_follows_the_contract(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    event = schemas["BookingEvent"]
    assert event["required"] == ["message_id", "type", "schema_version", "occurred_at", "booking_id", "booking"]
    assert event["properties"]["booking_id"]["pattern"] == "^[A-Za-z0-9_.:-]{1,64}$"
    assert event["properties"]["occurred_at"]["format"] == "date-time"
    assert "additionalProperties" not in event  # unknown extra fields are accepted
    duration = schemas["BookingSnapshot"]["properties"]["duration_minutes"]
    assert (duration["minimum"], duration["maximum"]) == (1, 720)
    approved = doc["components"]["messages"]["BookingApproved"]["payload"]["allOf"]
    assert approved[1] == {"properties": {"type": {"const": "BookingApproved"}}}
    # No control character in a stored string (CONTRACT: no U+0000; issue 16: nor the others but tab).
    no_control = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"
    assert event["properties"]["cancellation_reason"]["anyOf"][0] == {
        "maxLength": 200,
        "pattern": no_control,
        "type": "string",
    }
    assert schemas["BookingSnapshot"]["properties"]["student_id"]["pattern"] == no_control
    received = doc["operations"]["receiveBookingEvents"]["messages"]
    assert {m["$ref"].rsplit("/", 1)[1] for m in received} == {
        "bookingApproved",
        "bookingConfirmed",
        "bookingCancelled",
    }
    sent = doc["operations"]["sendSessionEvents"]["messages"]
    assert {m["$ref"].rsplit("/", 1)[1] for m in sent} == {"sessionCreated", "sessionUpdated", "sessionCancelled"}


def test_output_schema_lists_every_field_as_always_present(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert set(schemas["SessionEvent"]["required"]) == set(schemas["SessionEvent"]["properties"])
    # cancellation_reason is written only when a cancelled session has one.
    assert set(schemas["SessionView"]["required"]) == set(schemas["SessionView"]["properties"]) - {
        "cancellation_reason"
    }
    assert schemas["SessionView"]["properties"]["status"]["enum"] == ["SCHEDULED", "CANCELLED"]
    assert schemas["SessionEvent"]["properties"]["occurred_at"]["format"] == "date-time"
    assert schemas["SessionView"]["properties"]["scheduled_start"]["format"] == "date-time"


def test_dead_letter_headers_name_every_reason(doc: dict[str, Any]) -> None:
    headers = doc["components"]["messages"]["DeadLetter"]["headers"]
    assert headers["properties"]["dlq-reason"]["enum"] == list(get_args(DlqReason))
    assert set(headers["required"]) == {
        "dlq-reason",
        "dlq-error",
        "dlq-source-topic",
        "dlq-source-partition",
        "dlq-source-offset",
        "dlq-failed-at",
    }
