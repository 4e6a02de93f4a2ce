"""structlog setup: key-value lines on a terminal, JSON otherwise. One line per batch, not per message.

The standard library's records (aiokafka, SQLAlchemy, Alembic) go through the same processors, so a log
collector reads one format; and every line, exceptions included, passes through ``redact`` first.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from pydantic import SecretStr

# user:password@ in any URL (a database URL in a driver's error, say): the password becomes ***.
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
# Shorter values would mask ordinary words; such a secret is weak anyway, and URLs are masked by their shape.
_MIN_SECRET_CHARS = 6
_secrets: set[str] = set()


def redact(text: str) -> str:
    """``text`` with URL passwords and the registered secret values replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def register_secrets(values: Iterable[SecretStr | str | None]) -> None:
    """Values that must never appear in a log line, whatever carries them (a message, an error, a traceback)."""
    for value in values:
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if plain and len(plain) >= _MIN_SECRET_CHARS:
            _secrets.add(plain)


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
