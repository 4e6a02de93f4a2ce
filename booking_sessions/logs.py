"""structlog setup: key-value lines on a terminal, JSON otherwise. One line per batch, not per message.

The standard library's records (aiokafka, SQLAlchemy, Alembic) go through the same processors, so a log
collector reads one format; and every line, exceptions included, passes through ``redact`` first, as do the
tracebacks of crashes that escape every handler (``sys.excepthook``, ``threading.excepthook``).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TypeGuard

import structlog
from pydantic import SecretStr

# user:password@ in any URL (a database URL in a driver's error, say): the password becomes ***.
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
# Shorter secrets are masked only where they stand alone (not inside a longer word or number), so a weak
# password "abc" is still masked in "password abc" without shredding every "abc" in "abcdef". Longer ones are
# masked wherever they appear.
_WHOLE_WORD_BELOW = 8
_secrets: set[str] = set()


def redact(text: str) -> str:
    """``text`` with URL passwords and the registered secret values replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    pattern = _secrets_pattern(frozenset(_secrets))
    return text if pattern is None else pattern.sub("***", text)


@functools.lru_cache(maxsize=4)
def _secrets_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    # Longest first: a secret that contains another is masked whole, not in pieces.
    alternatives = [
        re.escape(s) if len(s) >= _WHOLE_WORD_BELOW else rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])"
        for s in sorted(secrets, key=lambda s: (-len(s), s))
    ]
    return re.compile("|".join(alternatives)) if alternatives else None


def register_secrets(values: Iterable[SecretStr | str | None]) -> None:
    """Values that must never appear in a log line, whatever carries them (a message, an error, a traceback).

    Every non-empty value counts, however short; a value and its stripped form are both masked.
    """
    for value in values:
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if plain:
            _secrets.update(form for form in (plain, plain.strip()) if form)


def _redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, SecretStr):
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = redact(value)
        elif isinstance(value, (dict, list, tuple)):
            event[key] = _redact_nested(value)
    return event


def _redact_nested(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, dict):
        return {k: _redact_nested(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_nested(v) for v in value]
    return value


def _print_redacted_traceback(
    kind: type[BaseException], error: BaseException, trace: types.TracebackType | None
) -> None:
    """``sys.excepthook``: a crash's traceback goes through ``redact`` like every log line."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, error, trace))))
    sys.stderr.flush()


def _print_redacted_thread_traceback(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # the standard hook's rule: a thread ending with SystemExit is silent
    name = args.thread.name if args.thread is not None else "?"
    sys.stderr.write(f"Exception in thread {name}:\n")
    _print_redacted_traceback(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)


class _StderrHandler(logging.Handler):
    """Writes to the sys.stderr of the moment: a test runner may swap it and close the old one."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)  # the standard library's policy: report on stderr, never raise


class RepeatsFilter(logging.Filter):
    """Lets the first of identical lines of a library (same logger, level and text) through, then at most one per
    ``window_s`` seconds, saying how many were held back meanwhile. A broker that is down makes aiokafka log the same
    two lines at every reconnect and metadata refresh, hundreds a second under some loops: they would bury the line
    that says what failed, and fill a disk. Only the standard library's records pass through it (the service's
    own lines are structlog's, one per batch or event)."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic, keep: int = 1000) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._keep = keep  # distinct lines remembered; past that, those older than the window are forgotten
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # line -> (when last let through, held)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if len(self._seen) > self._keep:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window_s}
        if last is not None and last[1]:
            record.msg = f"{key[2]} (and {last[1]} more like it in the {now - last[0]:.0f} s before)"
            record.args = ()
        return True


# aiokafka's error lines after which the client itself goes on (retries, rejoins): (logger, message) -> the index
# of the error among the record's arguments, whose ``retriable`` decides; None: retried whatever the cause.
_RETRIED_BY_THE_CLIENT: dict[tuple[str, str], int | None] = {
    ("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: %s"): 0,
    ("aiokafka.consumer.group_coordinator", "Heartbeat session expired - marking coordinator dead"): None,
    ("aiokafka.consumer.group_coordinator", "Heartbeat send request failed: %s. Will retry."): None,
    ("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s"): 1,
    ("aiokafka.consumer.fetcher", "Failed fetch offsets from %s: %s"): 1,
    ("aiokafka.client", "Unable to update metadata from %s"): None,
    # A commit that met a rebalance (the member's generation moved on): the client rejoins; the loop logs its own
    # offset_commit_lost, and the records are delivered again to whoever owns their partitions now.
    (
        "aiokafka.consumer.group_coordinator",
        "OffsetCommit failed for group %s due to group error (%s), will rejoin",
    ): None,
    # Not retried, but handled: producer.publish.Publisher falls back to acks=all and says so in a warning of its
    # own (idempotent_producer_refused: Tansu, the embedded broker of the quick start, refuses InitProducerId).
    ("aiokafka.producer.sender", "Unexpected error during InitProducerIdRequest: %s"): None,
}


class RetriedAsWarning(logging.Filter):
    """aiokafka logs some failures as errors and then retries them: a group coordinator lookup on every start while
    the broker elects the coordinator (``[Error 15] GroupCoordinatorNotAvailableError``); a fetch, a metadata update
    or a heartbeat after a pause (a process stopped a while, a long GC, a broker that was briefly silent), and at 3
    a.m. an error line reads as something to act on (a newcomer's find: log-based alerting fired for a pause that
    recovered). Such a record is passed on as a warning when the client retries it (its error ``retriable``, or a
    line the client follows with a retry or a rejoin whatever the cause); one it gives up on stays an error. An
    outage that lasts is seen where it matters: /readyz, the stall and retry alerts."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or not isinstance(record.msg, str):
            return True
        key = (record.name, record.msg)
        if key not in _RETRIED_BY_THE_CLIENT:
            return True
        position = _RETRIED_BY_THE_CLIENT[key]
        args = record.args if isinstance(record.args, tuple) else ()
        if position is None or (len(args) > position and getattr(args[position], "retriable", False)):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# aiokafka's info lines an operator must see: (logger, message) -> what it means here, appended to the line. Their
# loggers are let through at INFO (root stays at WARNING), and their other info lines are dropped.
_TOO_QUIET: dict[tuple[str, str], str] = {
    ("aiokafka.consumer.fetcher", "Fetch offset %s is out of range for partition %s, resetting offset"): (
        " to the partition's earliest record (auto_offset_reset=earliest): the committed offset is no longer in the"
        " log. Either the records from it on were deleted before this group read them (retention.ms or"
        " delete-records shorter than an outage or a held partition: those records are lost to this service, and"
        " the upstream must send them again), or the log was truncated behind it (an unclean leader election:"
        " the partition is read again from its start, and the inbox drops the repeats)"
    ),
}


class TooQuietAsWarning(logging.Filter):
    """Passes the info lines of ``_TOO_QUIET`` on as warnings, with what they mean here, and drops the other info
    lines of their loggers. A newcomer's find: a committed offset that retention had overtaken was reset past the
    records it had not read, and the only trace was aiokafka's info line, below the WARNING level the libraries log
    at: records skipped without a word."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.name not in _TOO_QUIET_LOGGERS:
            return True
        meaning = _TOO_QUIET.get((record.name, record.msg)) if isinstance(record.msg, str) else None
        if meaning is None:
            return False
        record.msg = f"{record.msg}{meaning}"
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_TOO_QUIET_LOGGERS = frozenset(name for name, _ in _TOO_QUIET)


class _Named:
    """An exception without text, as a log argument: its class name (``TimeoutError``) where "" would stand."""

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def __str__(self) -> str:
        return type(self._error).__name__

    __repr__ = __str__


class WordlessErrorsNamed(logging.Filter):
    """A library's line whose error has no text names the error's class instead of nothing: aiokafka's
    'Unable connect to "host:port": ' ended in nothing for a TLS handshake a plaintext listener never answered,
    where the README promises the client's line says why (a newcomer's find)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_wordless(a) for a in record.args):
            record.args = tuple(_Named(a) if _wordless(a) else a for a in record.args)
        return True


def _wordless(value: object) -> TypeGuard[BaseException]:
    return isinstance(value, BaseException) and not str(value)


def configure_logging(
    level: str = "INFO", *, json: bool | None = None, secrets: Iterable[SecretStr | str | None] = ()
) -> None:
    """Call once, from the command, before anything logs."""
    register_secrets(secrets)
    # Tracebacks that escape every handler (a bug in a command, a dying thread) bypass logging: mask them too.
    sys.excepthook = _print_redacted_traceback
    threading.excepthook = _print_redacted_thread_traceback
    as_json = not sys.stderr.isatty() if json is None else json
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _redact_event, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Looked up at each use, not bound once: a test runner may swap sys.stderr and close the old one.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_event,
                renderer,
            ],
        )
    )
    handler.addFilter(RetriedAsWarning())  # reads the error arguments' ``retriable``: before they are named
    handler.addFilter(WordlessErrorsNamed())
    handler.addFilter(TooQuietAsWarning())
    handler.addFilter(RepeatsFilter())
    handler.set_name("booking-sessions")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "booking-sessions"]:
        root.removeHandler(old)
    root.addHandler(handler)
    # aiokafka and SQLAlchemy log through the standard library; keep their chatter at warnings.
    root.setLevel(max(numeric, logging.WARNING))
    for name in _TOO_QUIET_LOGGERS:  # their lines of _TOO_QUIET become warnings (TooQuietAsWarning)
        logging.getLogger(name).setLevel(logging.INFO if numeric <= logging.WARNING else logging.NOTSET)
