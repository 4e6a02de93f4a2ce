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
import traceback
import types
from collections.abc import Iterable, MutableMapping
from typing import Any

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
    handler.set_name("booking-sessions")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "booking-sessions"]:
        root.removeHandler(old)
    root.addHandler(handler)
    # aiokafka and SQLAlchemy log through the standard library; keep their chatter at warnings.
    root.setLevel(max(numeric, logging.WARNING))
