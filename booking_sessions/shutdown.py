"""SIGTERM's end of ``run``: the deadline, kept by a timer thread, and the last line, which says what was left."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import structlog

from models.faults import first_line, is_transient

log = structlog.get_logger("booking_sessions.cli")


class Shutdown:
    """SIGTERM's deadline, kept by a timer thread: it fires however busy or stuck the event loop is (a callback on
    the loop would wait for the loop). ``unfinished`` says what the service had not finished, for the last line."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.unfinished: Callable[[], dict[str, Any]] = dict
        self.started = False  # the service runs: a signal now drains it (else it ends the start-up at once)

    def begin(self, signal_name: str) -> None:
        """The first signal: say what is being finished, and start the deadline's timer."""
        # Structured lines, not console prints: JSON like every other line when not on a terminal.
        log.info(
            "shutdown_requested",
            signal=signal_name,
            doing="finishing the batch in hand, committing, flushing the relay; a second signal exits at once",
            timeout_s=self.timeout_s,
        )
        timer = threading.Timer(self.timeout_s, self.give_up)
        timer.daemon = True
        timer.start()

    def give_up(self) -> None:
        """The deadline passed: log what was unfinished and exit with code 1 at once."""
        # Nothing uncommitted is lost: offsets trail the database, so the next owner redelivers and the inbox
        # drops what was already applied; unpublished outbox rows wait for the next relay.
        log.error(
            "shutdown_timed_out",
            timeout_s=self.timeout_s,
            unfinished=self.unfinished(),
            outcome="exiting now; the next owner redelivers what was not committed",
        )
        os._exit(1)

    def incomplete(self, error: BaseException) -> None:
        """The drain after the signal failed with ``error``: log it with what was unfinished (the caller exits 1);
        with its traceback unless it is the world's (``models.faults.is_transient``), which would be a bug's."""
        log.error(
            "shutdown_incomplete",
            cause=type(error).__name__,
            error=first_line(error, 300),
            unfinished=self.unfinished(),
            outcome="exiting; the next owner redelivers what was not committed, the next relay sends the outbox",
            exc_info=None if is_transient(error) else error,
        )

    def forced(self, signal_name: str) -> None:
        """A second signal: exit with code 1 at once, saying what was unfinished."""
        log.warning("shutdown_forced", signal=signal_name, reason="second signal", unfinished=self.unfinished())
        os._exit(1)
