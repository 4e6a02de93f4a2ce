"""An operator's one line for a deadline that passed names the server that stopped answering: a TimeoutError has
no text, and a database gone silent mid-command used to end in "connection failed: TimeoutError: TimeoutError"."""

from __future__ import annotations

import asyncio
from types import FunctionType

import asyncpg
import pytest
from aiokafka.errors import KafkaTimeoutError, LeaderNotAvailableError, TopicAuthorizationFailedError
from sqlalchemy.exc import DBAPIError

from booking_sessions.ops.failures import one_line


def waiting_in(module: str) -> FunctionType:
    """A function whose frame belongs to ``module`` (as a library's own code would), cancelled where it waits."""
    namespace = {"__name__": module, "asyncio": asyncio}
    exec("def wait():\n    raise asyncio.CancelledError", namespace)
    return namespace["wait"]  # type: ignore[return-value]


def deadline_passed_in(module: str) -> TimeoutError:
    """What asyncio.timeout raises over the wait it cancelled: its own frames are the caller's, the wait's are in
    its cause."""
    try:
        try:
            waiting_in(module)()
        except asyncio.CancelledError as cancelled:
            raise TimeoutError from cancelled
    except TimeoutError as error:
        return error
    raise AssertionError("unreachable")


DATABASE_SILENT = (
    "the database did not answer within its deadline (a statement: BOOKING_DATABASE_STATEMENT_TIMEOUT_S + 5 s; a "
    "new connection: BOOKING_DATABASE_CONNECT_TIMEOUT_S)"
)


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("asyncpg.protocol.protocol", DATABASE_SILENT),
        ("sqlalchemy.dialects.postgresql.asyncpg", DATABASE_SILENT),
        ("aiokafka.consumer.group_coordinator", "the Kafka broker did not answer within its deadline"),
        ("somewhere.else", "a server did not answer within its deadline"),
    ],
)
def test_a_deadline_says_which_server_did_not_answer(module: str, line: str) -> None:
    assert one_line(deadline_passed_in(module)) == line


def test_a_timeout_with_text_of_its_own_keeps_it() -> None:
    assert one_line(TimeoutError("pool exhausted")) == "connection failed: TimeoutError: pool exhausted"


def test_a_kafka_error_of_an_outage_is_not_worded_as_a_refusal() -> None:
    assert str(one_line(LeaderNotAvailableError())).startswith("the Kafka broker is away or not answering")
    assert str(one_line(TopicAuthorizationFailedError())).startswith("Kafka refused: TopicAuthorizationFailedError")


def test_the_kafka_clients_own_deadline_is_not_worded_as_a_refusal() -> None:
    # aiokafka's KafkaTimeoutError is not "retriable" by its flag: a send not acknowledged, offsets not found in time.
    said = "the Kafka broker did not answer within the client's deadline (BOOKING_KAFKA_REQUEST_TIMEOUT_S)"
    assert one_line(KafkaTimeoutError()) == said
    assert one_line(KafkaTimeoutError("Failed to get offsets by times in 30000 ms")) == (
        f"{said}: Failed to get offsets by times in 30000 ms"
    )


def test_the_statement_timeout_and_an_older_schema_say_what_to_do() -> None:
    # A newcomer's finds: "database error: canceling statement due to statement timeout" named neither the setting
    # nor a way out; a column the schema lacks (an older release's migration) said nothing of `migrate`.
    timed_out = asyncpg.QueryCanceledError("canceling statement due to statement timeout")
    assert "BOOKING_DATABASE_STATEMENT_TIMEOUT_S" in str(one_line(DBAPIError("SELECT ...", None, timed_out)))
    missing = asyncpg.UndefinedColumnError('column "cancelled_at_beyond_us" does not exist')
    assert "run `booking-sessions migrate`" in str(one_line(DBAPIError("INSERT ...", None, missing)))
    cancelled = asyncpg.QueryCanceledError("canceling statement due to user request")
    assert one_line(DBAPIError("SELECT ...", None, cancelled)) == (
        "database error: canceling statement due to user request"
    )
