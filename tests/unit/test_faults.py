"""Transient or poison: the classification that decides between retrying a batch and bisecting it."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from models.backoff import jittered
from models.faults import error_fields, is_transient, schema_hint, sqlstate


def db_error(code: str, kind: type[DBAPIError] = DBAPIError) -> DBAPIError:
    """What SQLAlchemy raises for an asyncpg error with this SQLSTATE."""
    original = asyncpg.PostgresError.new({"C": code, "M": f"server says {code}", "S": "ERROR"})
    wrapper = type("AsyncAdapt_asyncpg_dbapi_Error", (Exception,), {"sqlstate": code})(str(original))
    wrapper.__cause__ = original
    return kind("INSERT ...", {}, wrapper)


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock detected
        ("08006", True),  # connection failure
        ("57P01", True),  # admin shutdown (a restart or failover)
        ("53300", True),  # too many connections
        ("22021", False),  # invalid byte sequence: a NUL in text
        ("23505", False),  # unique violation
        ("23514", False),  # check violation
        ("22P02", False),  # invalid text representation
        ("42P01", True),  # undefined table: a deploy without `migrate` waits for it, dead-letters nothing
        ("42501", True),  # insufficient privilege: the same for every record
        ("25006", True),  # read-only transaction: a standby after a failover (before: isolated, then the exit)
        ("25P03", True),  # the server ended a transaction left idle too long
        ("3D000", True),  # the database is not there
        ("25P02", False),  # in failed transaction: a bug, not the world
    ],
)
def test_sqlstate_decides(code: str, transient: bool) -> None:
    error = db_error(code, IntegrityError if code.startswith("23") else DBAPIError)
    assert sqlstate(error) == code
    assert is_transient(error) is transient


def test_the_world_failing_is_transient() -> None:
    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(TimeoutError())
    assert is_transient(KafkaConnectionError("broker away"))
    assert is_transient(KafkaTimeoutError())
    assert is_transient(OperationalError("connect", {}, ConnectionResetError()))


def test_other_errors_are_not_transient() -> None:
    assert not is_transient(ValueError("a bug or a bad record"))


@pytest.mark.parametrize(
    "error",
    [
        UnknownTopicOrPartitionError(),
        TopicAuthorizationFailedError(),
        MessageSizeTooLargeError(),
        NotLeaderForPartitionError(),
    ],
)
def test_a_kafka_error_is_never_taken_for_the_record_s_fault(error: Exception) -> None:
    # A lasting refusal of one dead letter is handled where it is sent; what reaches the batch is the broker's.
    assert is_transient(error)


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    waits = [jittered(8.0) for _ in range(500)]
    assert all(4.0 <= w <= 8.0 for w in waits)
    assert max(waits) - min(waits) > 1.0  # spread, not one fixed value


def test_a_schema_not_migrated_far_enough_says_to_migrate() -> None:
    # A newcomer's find: a database one migration behind retried "column ... does not exist" without that hint.
    assert (
        schema_hint(db_error("42703"))
        == "the database's schema is older than this release: run `booking-sessions migrate`"
    )
    assert schema_hint(db_error("42P01")) == "the database has no schema yet: run `booking-sessions migrate`"
    assert schema_hint(db_error("40001")) is None and schema_hint(OSError("away")) is None


def test_every_retry_line_carries_the_schema_hint() -> None:
    # A newcomer's find: the samplers and the relay retried a missing column without the consumer's hint.
    assert error_fields(db_error("42703"))["hint"].endswith("run `booking-sessions migrate`")
    assert error_fields(db_error("40001")) == {"error": "server says 40001"}
