"""Is this failure the world's (retry) or the message's (poison)? Decided by error class and SQLSTATE."""

from __future__ import annotations

import random

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError, RequestTimedOutError
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
)
_TRANSIENT_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock detected

_TRANSIENT_KAFKA = (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, NotLeaderForPartitionError)


def jittered(delay_s: float) -> float:
    """Between half and all of the delay: instances that failed together do not retry in lockstep."""
    return delay_s * random.uniform(0.5, 1.0)


def first_line(error: BaseException, limit: int = 500) -> str:
    """The first line of the database's (or any) error message, at most ``limit`` characters: for logs and
    dead letters, without SQLAlchemy's statement and parameters."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def sqlstate(error: BaseException) -> str | None:
    original = getattr(error, "orig", None)
    for candidate in (error, original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_transient(error: BaseException) -> bool:
    if isinstance(error, (Transient, OSError, ConnectionError, TimeoutError, *_TRANSIENT_KAFKA)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    code = sqlstate(error)
    if code is not None:
        return code in _TRANSIENT_SQLSTATES or code[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # No SQLSTATE at all: the driver lost the connection before the server could answer.
    return isinstance(error, (OperationalError, InterfaceError))
