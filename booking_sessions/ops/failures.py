"""What the operators' commands say when the world is not as configured: one line, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.topics import partitions_of
from models.errors import BookingSessionsError
from models.faults import READ_ONLY_TRANSACTION, first_line, schema_hint, sqlstate

log = structlog.get_logger(__name__)

# How long a command waits for a server that does not answer before it says so.
CONNECT_TIMEOUT_S = 15.0
LIMIT = 300  # characters of a server's own message quoted in the line (models.faults.first_line)

_SQLSTATE_HINTS = {
    "3D000": "the database does not exist",
    "28P01": "the database refused the login (password)",
    "28000": "the database refused the login",
    READ_ONLY_TRANSACTION: "the database refuses writes (read-only: a standby, or default_transaction_read_only is on)",
}


class OperatorError(BookingSessionsError):
    """The command cannot do what was asked; the message is the one line the operator sees (exit code 2)."""


# Per thread (a command runs its coroutine on the thread that called it; the tests run commands in threads).
_changing = threading.local()


def changes_begin() -> None:
    """A command calls this as it starts changing things (its first batch, chunk or offset commit): a failure from
    then on is a stop half-way, and its line ends with what that leaves and how to go on (``terminal.run``); one
    before it (a refused argument, a server not there) changed nothing and says only what is wrong."""
    _changing.begun = True


def changes_begun(*, forget: bool = False) -> bool:
    """Whether ``changes_begin`` was called on this thread since the last ``forget``."""
    begun = bool(getattr(_changing, "begun", False))
    if forget:
        _changing.begun = False
    return begun


def one_line(error: BaseException) -> str | None:
    """The readable line for a failure the operator can act on; None for anything else (a bug: let it show).

    Our own errors (``BookingSessionsError``) are written as one line and shown whole; a server's or a client's
    message is cut to its first line (``models.faults.first_line``, at most LIMIT characters) after a prefix that
    says which server refused, or a hint when the SQLSTATE says what to do."""
    if isinstance(error, BookingSessionsError):
        return str(error)
    if isinstance(error, KafkaConnectionError):
        return f"cannot reach the Kafka broker: {first_line(error, LIMIT)}"
    if isinstance(error, KafkaTimeoutError):
        # The client's own deadline (a send not acknowledged, offsets not found in time): not retriable by its flag,
        # but no refusal either: the broker stopped answering. Its text is often only its name.
        said = first_line(error, LIMIT)
        detail = "" if said in ("", type(error).__name__) else f": {said.removeprefix('KafkaTimeoutError: ')}"
        return f"the Kafka broker did not answer within the client's deadline (BOOKING_KAFKA_REQUEST_TIMEOUT_S){detail}"
    if isinstance(error, KafkaError) and error.retriable:
        # LeaderNotAvailable, NodeNotReady, RequestTimedOut...: what a broker that is down or silent looks like.
        return f"the Kafka broker is away or not answering ({type(error).__name__}): {first_line(error, LIMIT)}"
    if isinstance(error, KafkaError):
        return f"Kafka refused: {type(error).__name__}: {first_line(error, LIMIT)}"
    if isinstance(error, DBAPIError):
        code = sqlstate(error)
        hint = _SQLSTATE_HINTS.get(code or "") or schema_hint(error)
        if code == "57014" and "statement timeout" in first_line(error):
            hint = (
                "the database ended a statement at BOOKING_DATABASE_STATEMENT_TIMEOUT_S: choose fewer rows "
                "(a narrower filter) or raise that setting for this command"
            )
        return hint or f"database error: {first_line(error, LIMIT)}"
    if isinstance(error, SQLAlchemyError):
        return f"database error: {first_line(error, LIMIT)}"
    if isinstance(error, TimeoutError) and not str(error):
        return _deadline_passed(error)
    if isinstance(error, (OSError, ConnectionError, TimeoutError)):
        return f"connection failed: {type(error).__name__}: {first_line(error, LIMIT)}"
    return None


# Which server a deadline was waiting on, by the library whose code the wait passed through (the innermost wins).
_DATABASE_SILENT = (
    "the database did not answer within its deadline (a statement: BOOKING_DATABASE_STATEMENT_TIMEOUT_S + 5 s; a "
    "new connection: BOOKING_DATABASE_CONNECT_TIMEOUT_S)"
)
_SERVERS = (
    ("asyncpg", _DATABASE_SILENT),
    ("sqlalchemy", _DATABASE_SILENT),
    ("aiokafka", "the Kafka broker did not answer within its deadline"),
)


def _deadline_passed(error: TimeoutError) -> str:
    """A TimeoutError has no text of its own: say which server stopped answering, found from the frames the wait
    passed through (a silent database mid-command said only "TimeoutError: TimeoutError")."""
    said = "a server did not answer within its deadline"
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:  # the deadline's own frames, then the wait it cancelled
        seen.add(id(cause))
        traceback = cause.__traceback__
        while traceback is not None:
            module = str(traceback.tb_frame.f_globals.get("__name__", ""))
            said = next((line for library, line in _SERVERS if module.split(".")[0] == library), said)
            traceback = traceback.tb_next
        cause = cause.__cause__ or cause.__context__
    return said


def no_answer(waited_s: float) -> str:
    """What a TimeoutError means (its own text is empty), with the seconds actually waited."""
    return f"no answer within {waited_s:.0f} s"


def shown_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "(unreadable BOOKING_DATABASE_URL)"


async def check_database(engine: AsyncEngine, url: str) -> None:
    """Fail with one line if the database cannot be reached or has no schema."""
    where = shown_url(url)
    started = time.monotonic()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S), engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM inbox_messages LIMIT 1"))
    except TimeoutError:
        # The engine's own connect timeout (BOOKING_DATABASE_CONNECT_TIMEOUT_S) may fire first: say what happened.
        waited = time.monotonic() - started
        raise OperatorError(f"cannot reach the database at {where}: {no_answer(waited)}") from None
    except (OSError, SQLAlchemyError) as error:
        raise OperatorError(f"cannot use the database at {where}: {one_line(error)}") from None


async def topic_partitions(bootstrap: str, topic: str, setting: str, **client_options: Any) -> list[int]:
    """The topic's partitions; one line if the broker does not answer or the topic does not exist.

    Asks for the list of topics first: describing a missing topic by name would create it on a broker with
    ``auto.create.topics.enable`` (Kafka's default), and a typo must not leave a topic behind.
    """
    options = {"request_timeout_ms": int(CONNECT_TIMEOUT_S * 1000), **client_options}
    started = time.monotonic()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            if topic not in await _topic_names(bootstrap, options):
                raise LookupError(topic)
            return await partitions_of(bootstrap, topic, **options)
    except (TimeoutError, KafkaConnectionError) as error:
        raise OperatorError(unreachable_broker(bootstrap, error, time.monotonic() - started)) from None
    except LookupError:
        raise OperatorError(missing_topic(topic, bootstrap, setting)) from None


def unreachable_broker(bootstrap: str, error: TimeoutError | KafkaConnectionError, waited_s: float) -> str:
    """The one line for a broker that did not answer within ``waited_s`` seconds (TimeoutError) or refused the
    connection (the client logged why just above)."""
    if isinstance(error, TimeoutError):
        return f"cannot reach the Kafka broker at {bootstrap}: {no_answer(waited_s)}"
    return (
        f"cannot reach the Kafka broker at {bootstrap} (is it up, is BOOKING_KAFKA_BOOTSTRAP right? "
        "the client's log above says why)"
    )


def missing_topic(topic: str, bootstrap: str, setting: str) -> str:
    """The one line for a topic the broker does not have, naming the setting to check."""
    return f"topic {topic!r} does not exist on {bootstrap} (check {setting}); create it first (README, Running it)"


async def absent_topic(bootstrap: str, topics: Mapping[str, str], **client_options: Any) -> str | None:
    """The one line for the first topic of ``topics`` ({setting name: topic}) the broker does not have; None when
    all exist. Raises what the client raises (KafkaConnectionError) and TimeoutError after CONNECT_TIMEOUT_S.

    Lists the topics and never asks for one by name, so a broker with ``auto.create.topics.enable`` (Kafka's
    default) does not create a typo'd topic, which ``run`` would then consume from, finding nothing, forever.
    """
    options = {"request_timeout_ms": int(CONNECT_TIMEOUT_S * 1000), **client_options}
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        existing = set(await _topic_names(bootstrap, options))
    return next((missing_topic(t, bootstrap, s) for s, t in topics.items() if t not in existing), None)


async def require_topics(bootstrap: str, topics: Mapping[str, str], **client_options: Any) -> None:
    """``absent_topic`` for the operators' commands: raises OperatorError with its line, or when the broker cannot
    be reached or does not answer within CONNECT_TIMEOUT_S."""
    started = time.monotonic()
    try:
        missing = await absent_topic(bootstrap, topics, **client_options)
    except (TimeoutError, KafkaConnectionError) as error:
        raise OperatorError(unreachable_broker(bootstrap, error, time.monotonic() - started)) from None
    if missing is not None:
        raise OperatorError(missing)


async def _topic_names(bootstrap: str, options: dict[str, Any]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        names: list[str] = await admin.list_topics()
    finally:
        await admin.close()
    return names


def port_problem(host: str, port: int) -> str | None:
    """The one line when ``host:port`` (BOOKING_METRICS_HOST and _PORT) cannot be bound now; None when it can.

    Bound and released at once, with SO_REUSEADDR as the HTTP server binds it, so ``run`` refuses a taken port
    before it starts anything (embedded servers take seconds), not after."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        return (
            f"cannot serve /metrics on {host}:{port} ({error.strerror or error}): set BOOKING_METRICS_PORT to a "
            "free port, or 0 to turn the server off (and BOOKING_METRICS_HOST to an address of this machine)"
        )
    return None


async def close_within(stop: Awaitable[None], what: str, timeout_s: float | None = None) -> None:
    """Await a Kafka client's ``stop()`` for at most ``timeout_s`` seconds (default CONNECT_TIMEOUT_S): at the end
    of a command, a broker gone silent must neither hold it (CONTRACT "it never hangs": aiokafka's close waits on
    the group coordinator and on unacknowledged batches) nor put a traceback over the line that says what failed
    (the client's close may raise CancelledError of its own tasks). Logs and returns instead; a cancellation of
    the command itself (Ctrl-C) still propagates."""
    limit_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        async with asyncio.timeout(limit_s):
            await stop
    except TimeoutError:
        log.warning("kafka_client_close_abandoned", client=what, waited_s=limit_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("kafka_client_close_failed", client=what, error="CancelledError")
    except Exception as error:
        log.warning("kafka_client_close_failed", client=what, error=first_line(error, LIMIT))
