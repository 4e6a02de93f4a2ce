"""Is this failure the world's (retry) or the message's (poison)? Decided by error class and SQLSTATE."""

from __future__ import annotations

import re

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from models.errors import Transient

# SQLSTATE classes and codes that say "try again later", not "this row is wrong".
_TRANSIENT_SQLSTATE_CLASSES = (
    "08",  # connection exception
    "53",  # insufficient resources
    "55",  # object not in prerequisite state (lock not available)
    "57",  # operator intervention (shutdown, failover)
    "58",  # system error
    # Wrong for every record alike, so not the record's fault: a schema not migrated yet (42P01), a revoked
    # grant (42501), refused credentials. Retried (and alerted on) until fixed, never a mass dead-lettering.
    "28",  # invalid authorization
    "42",  # syntax error or access rule violation
    "3D",  # invalid catalog name: the database renamed or not there (yet)
    "3F",  # invalid schema name: the schema missing from the search path
)
# A write refused as read-only: a standby, after a failover that left the connection on the old primary. Also a
# reason to drop the connection (booking_sessions.database_deadlines.drop_unusable_connections).
READ_ONLY_TRANSACTION = "25006"
_TRANSIENT_SQLSTATES = (
    "40001",  # serialization failure
    "40P01",  # deadlock detected
    # Class 25 is mostly a client's bug (a statement in an aborted transaction), but not these two:
    READ_ONLY_TRANSACTION,
    "25P03",  # idle-in-transaction session timeout: the server ended a transaction that waited too long
    "72000",  # snapshot too old
)


# What an operator should do about a database error that every record meets alike (retried meanwhile).
_SCHEMA_HINTS = {
    "42P01": "the database has no schema yet: run `booking-sessions migrate`",
    "42703": "the database's schema is older than this release: run `booking-sessions migrate`",
}


def schema_hint(error: BaseException) -> str | None:
    """For a retry's log line: what to run when the error is a schema not (or not fully) migrated, else None (a
    newcomer's find: a database one migration behind retried "column ... does not exist" without a word of
    ``migrate``)."""
    code = sqlstate(error)
    return _SCHEMA_HINTS.get(code) if code is not None else None


def error_fields(error: BaseException) -> dict[str, str]:
    """A retry's log fields for ``error``: ``error`` (its first line, at most 300 characters) and, for a schema not
    migrated far enough, ``hint`` (``schema_hint``). Every retry line of `run` uses it (the consumer, the relay,
    retention, the samplers): a newcomer found the samplers and the relay retrying "column ... does not exist" on
    a database one migration behind without the hint the consumer's line had."""
    fields = {"error": first_line(error, 300)}
    if (hint := schema_hint(error)) is not None:
        fields["hint"] = hint
    return fields


def first_line(error: BaseException, limit: int = 500) -> str:
    """The one error-line helper: the first line of the database's (or any) error message, at most ``limit``
    characters, for logs, dead letters and operators' messages, without SQLAlchemy's statement and parameters (which
    may quote the input). An error with no text gives its class name."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE (five characters) the error carries, on itself, on SQLAlchemy's ``orig`` or on the
    driver's cause; None when there is none (a connection lost before the server answered, not a database error)."""
    original = getattr(error, "orig", None)
    for candidate in (error, original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_transient(error: BaseException) -> bool:
    """True: the world's fault, retry with backoff; False: this record's (or a bug), isolate and dead-letter it.

    Every Kafka error is the world's: a dead letter that the DLQ topic refuses for good is handled where it is
    sent (``producer.publish.Publisher.send_dead_letters``), so what reaches here is a broker away or slow, a
    leader moving, or a setting wrong for every record alike (an unknown DLQ topic, a missing ACL): retried and
    alerted on until fixed, never taken for database poison (issue 12).
    """
    if isinstance(error, (Transient, OSError, ConnectionError, TimeoutError, KafkaError)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    code = sqlstate(error)
    if code is not None:
        return code in _TRANSIENT_SQLSTATES or code[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # No SQLSTATE at all: the driver lost the connection before the server could answer.
    return isinstance(error, (OperationalError, InterfaceError))


# asyncpg's own refusal of a value quotes it ("invalid input for query argument $9: ['...'] (reason)"): the input
# must not be echoed, and "$9" means nothing to an operator.
_ARGUMENT = re.compile(r"invalid input for query argument \$\d+: .*?(\(.*\))?$", re.DOTALL)


def refusal_text(error: BaseException) -> str:
    """dlq-error of a ``processing_error``: which layer refused the record, and its first line, without the input.

    Validation refuses what PostgreSQL would (CONTRACT "Input"), so this is for real surprises only.
    """
    text = first_line(error)
    found = _ARGUMENT.search(text)
    if found is not None:
        return f"the database driver refused a value: invalid input for a query argument {found.group(1) or ''}".strip()
    if isinstance(error, KafkaError):
        return f"the broker refused it: {text}"
    if sqlstate(error) is not None or isinstance(error, DBAPIError):
        return f"PostgreSQL refused it (SQLSTATE {sqlstate(error) or 'unknown'}): {text}"
    return f"processing failed ({type(getattr(error, 'orig', None) or error).__name__}): {text}"
