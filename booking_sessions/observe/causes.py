"""Errors reduced to a fixed vocabulary: the ``cause`` label of the retry counter and what probes may show."""

from __future__ import annotations

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError

from models.faults import sqlstate

RETRY_CAUSES = ("connection", "timeout", "kafka", "serialization_failure", "deadlock", "database", "other")


def retry_cause(error: BaseException) -> str:
    """A small fixed vocabulary for the ``cause`` label (an exception's text would explode the cardinality)."""
    code = sqlstate(error)
    if code == "40001":
        return "serialization_failure"
    if code == "40P01":
        return "deadlock"
    if isinstance(error, KafkaError):
        return "kafka"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, (OSError, ConnectionError)) or (isinstance(error, DBAPIError) and code is None):
        return "connection"
    if code is not None:
        return "database"
    return "other"


def describe(error: BaseException) -> str:
    """An error as a probe may show it: its cause, class and SQLSTATE; never its text (hosts, users, values)."""
    code = sqlstate(error)
    return f"{retry_cause(error)} ({type(error).__name__}{f', SQLSTATE {code}' if code else ''})"
