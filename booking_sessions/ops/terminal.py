"""How the operators' commands meet the terminal: settings, errors as one line, progress bars, output.

Anything the operator can fix (configuration, servers, arguments) ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.progress import Progress

from booking_sessions.logs import configure_logging, redact
from booking_sessions.ops.arguments import ArgumentError
from booking_sessions.ops.untrusted import line
from booking_sessions.settings import Settings

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """``message`` on stderr as one line, secrets masked (it may quote a topic or a server: shown as
    ``untrusted.line``); exit 2."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(line(("error:", "red"), " ", redact(message)))
    raise typer.Exit(2)


def settings_or_fail() -> Settings:
    """The settings from the environment, or one line naming each variable that is wrong (never its value). A
    ``BOOKING_`` variable that is no setting gets a warning line on stderr (``unknown_variables``)."""
    for warning in unknown_variables(os.environ):
        Console(stderr=True, highlight=False, soft_wrap=True).print(line(("warning:", "yellow"), " ", warning))
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            # A whole-settings validator has no location; its message names the variables itself.
            # pydantic's "Value error, " says nothing to an operator; the rule after it does.
            f"BOOKING_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
            if e["loc"]
            else e["msg"]
            for e in error.errors()
        )
        fail(f"invalid configuration: {problems}")


# BOOKING_ variables that are not settings of the service but are read here: the test fixtures' choice of servers.
_NOT_SETTINGS = frozenset({"BOOKING_TEST_KAFKA", "BOOKING_TEST_POSTGRES"})


def unknown_variables(environment: Mapping[str, str]) -> list[str]:
    """A warning for each ``BOOKING_`` variable of ``environment`` that no setting reads, naming the setting it is
    likely a misspelling of: before, ``BOOKING_INBOX_RETENTON=1h`` ran with the 30-day default and not a word (a
    newcomer's find). A warning, not a refusal: another program's variables may share the prefix."""
    known = {f"BOOKING_{name.upper()}" for name in Settings.model_fields} | _NOT_SETTINGS
    warnings = []
    for name in sorted(n for n in environment if n.upper().startswith("BOOKING_") and n.upper() not in known):
        close = difflib.get_close_matches(name.upper(), sorted(known - _NOT_SETTINGS), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is not a setting of booking-sessions and is ignored{hint}")
    return warnings


def load_settings(*, kafka: bool, database: bool) -> Settings:
    """The settings of an operator's command, with logging set up (quiet: ``Settings.logging_level``); one line and
    exit 2 when the command needs the broker (``kafka``) or the database (``database``) and it is not configured."""
    settings = settings_or_fail()
    # Progress bars and summaries speak for these commands; the service's per-batch log lines would drown them.
    # Warnings still show: aiokafka logs why a broker refused (TLS, SASL), which the one-line error cannot say.
    configure_logging(settings.logging_level(quiet=True), secrets=settings.secret_values())
    if kafka and settings.kafka_bootstrap is None:
        fail("BOOKING_KAFKA_BOOTSTRAP is not set (e.g. 127.0.0.1:9092): the command works on the service's broker")
    if database and settings.database_url is None:
        fail("BOOKING_DATABASE_URL is not set (e.g. postgresql+asyncpg://user:pw@127.0.0.1:5432/db)")
    return settings


def run(factory: Callable[[], Coroutine[Any, Any, T]], on_interrupt: str = "") -> T:
    """Run the command's coroutine and return its result. Ctrl-C: ``interrupted`` and ``on_interrupt`` on stderr,
    exit 130; SIGTERM: ``terminated`` and the same, exit 143; SIGHUP: ``hung up``, exit 129 (the clients are closed
    on the way out, within their deadlines; a second signal meanwhile exits at once); a failure the operator can act on
    (``ops.failures.one_line``): one line, exit 2, followed by ``on_interrupt`` (what a command stopped half-way
    left done, and how to go on, is the same whether a signal or a silent server stopped it) once the command began
    changing things (``ops.failures.changes_begin``); anything else (a bug) is raised
    with its traceback."""
    from booking_sessions.abandoned_commits import report_unretrieved

    # Kafka and SQLAlchemy: loaded by the commands that use them
    from booking_sessions.ops.failures import changes_begun, one_line

    stopped_by: list[int] = []
    changes_begun(forget=True)

    async def command() -> T:
        # An offset commit given up at its deadline (replay) that fails later: one warning, not asyncio's traceback.
        asyncio.get_running_loop().set_exception_handler(report_unretrieved)
        # Ctrl-C and SIGTERM cancel the command (its finally blocks close the clients, within their deadlines); a
        # second signal exits at once. Only on the main thread (the tests run commands in threads; a process has
        # one main thread); elsewhere asyncio.run's own Ctrl-C handling stays.
        if threading.current_thread() is threading.main_thread():
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()

            def on_signal(signum: int) -> None:
                stopped_by.append(signum)
                if len(stopped_by) == 1:
                    task.cancel()
                    return
                if sys.stderr.isatty():
                    sys.stderr.write("\x1b[?25h")  # the cursor a progress bar hid: no Rich cleanup runs after this
                _stopped_line(stopped_by[0], f"{on_interrupt}; a second signal: exiting without closing the clients")
                os._exit(128 + stopped_by[0])

            for signum in stop_signals():
                loop.add_signal_handler(signum, on_signal, signum)
        return await factory()

    try:
        return asyncio.run(command())
    except KeyboardInterrupt:
        _stopped_line(signal.SIGINT, on_interrupt)
        raise typer.Exit(130) from None
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        _stopped_line(stopped_by[0], on_interrupt)
        raise typer.Exit(128 + stopped_by[0]) from None
    except Exception as error:
        readable = one_line(error)
        if readable is None:
            raise
        # What a stop half-way leaves, only once the command began changing things (ops.failures.changes_begin).
        fail(readable + (on_interrupt if changes_begun() else ""))


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a command or ``run`` as Ctrl-C does (finishing what is under way): SIGINT, SIGTERM,
    and SIGHUP (the terminal or ssh session closed), unless it is ignored (``nohup``), which then stays so. Before,
    SIGHUP killed ``run`` and ``replay`` at once: exit code 129, no log line, no drain, no resume hint (a
    newcomer's find)."""
    hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hangup)


def _stopped_line(signum: int, after: str) -> None:
    """``interrupted`` (Ctrl-C), ``hung up`` (SIGHUP) or ``terminated`` (SIGTERM) and ``after``, as one line on
    stderr."""
    said = {signal.SIGINT: "interrupted", signal.SIGHUP: "hung up"}.get(signal.Signals(signum), "terminated")
    console = Console(stderr=True, highlight=False, soft_wrap=True)  # one line, also in a log file
    console.print(line(said, after))
    console.file.flush()


def argument(parse: Callable[[], T]) -> T:
    """Parse an argument now, before any connection: a bad one costs one line and exit code 2."""
    try:
        return parse()
    except ArgumentError as error:
        fail(str(error))


def print_all(parts: Sequence[RenderableType]) -> None:
    """To stdout; piped output keeps each table row on one line."""
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, 160)
    for part in parts:
        out.print(part)


def print_json(data: object) -> None:
    """``data`` as indented JSON on stdout (datetimes and other values as their str)."""
    typer.echo(json.dumps(data, indent=2, default=str))


def with_progress(
    work: Callable[[Progress], Awaitable[T]], unit: str = "records"
) -> Callable[[], Coroutine[Any, Any, T]]:
    """``work`` with a progress bar on stderr (drawn only on a terminal)."""
    from booking_sessions.ops.progress import progress_bar

    async def go() -> T:
        with progress_bar(Console(stderr=True), unit) as progress:
            return await work(progress)

    return go


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def help_text(command: Callable[..., None], **fields: str) -> str:
    """The docstring reflowed for typer's rich help: prose paragraphs on one line (rich would keep the docstring's
    hard line breaks and wrap each line again), example lines kept. Each ``{name}`` of ``fields`` is replaced by
    its value: lists derived from the code (the DLQ reasons, the event types), so the help cannot fall behind."""
    text = inspect.cleandoc(command.__doc__ or "")
    for name, value in fields.items():
        text = text.replace("{" + name + "}", value)
    paragraphs = text.split("\n\n")
    return "\n\n".join(p if p.startswith("Examples:") else " ".join(p.split()) for p in paragraphs)
