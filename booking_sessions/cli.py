"""The ``booking-sessions`` command. Builds settings, servers and clients, and hands them to the service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
import typer
from rich.console import Console

from booking_sessions.abandoned_commits import report_unretrieved
from booking_sessions.logs import configure_logging
from booking_sessions.ops.terminal import fail, help_text, settings_or_fail, stop_signals
from booking_sessions.ops.untrusted import line
from booking_sessions.settings import Settings
from booking_sessions.shutdown import Shutdown
from models.errors import ConfigurationError

app = typer.Typer(
    help="Booking events in, one live session per booking, SessionCreated out (see README.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # one line stays one line, whatever the width
log = structlog.get_logger("booking_sessions.cli")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])


def command(function: F) -> F:
    """``@app.command()`` with the docstring reflowed as help (``help_text``): rich would wrap its hard breaks."""
    app.command(help=help_text(function))(function)
    return function


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(factory())
    except ConfigurationError as error:
        fail(str(error))
    except (OSError, ConnectionError) as error:
        fail(f"{type(error).__name__}: {error}")
    raise AssertionError("unreachable")


@command
def run() -> None:
    """Consume booking events and relay session events until SIGTERM, SIGINT or SIGHUP (then drain and commit).

    Needs BOOKING_MEETING_SECRET (32 bytes or more) on configured servers. With neither BOOKING_KAFKA_BOOTSTRAP
    nor BOOKING_DATABASE_URL set, starts an embedded broker and PostgreSQL, says where they are, and makes a
    throwaway meeting secret if none is set; BOOKING_EMBEDDED_SERVERS=forbid (the production image) refuses
    that instead.
    """
    settings = settings_or_fail()
    configure_logging(settings.logging_level(), secrets=settings.secret_values())
    _run_async(lambda: _serve(settings))


async def _serve(settings: Settings) -> None:
    from aiokafka.errors import KafkaConnectionError

    from booking_sessions.observe.tracing import tracing

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    shutdown = Shutdown(settings.shutdown_timeout_s)

    def on_signal(signum: int) -> None:
        if stop.is_set():
            shutdown.forced(signal.Signals(signum).name)
        shutdown.begin(signal.Signals(signum).name)
        stop.set()

    for signum in stop_signals():
        loop.add_signal_handler(signum, on_signal, signum)
    loop.set_exception_handler(report_unretrieved)
    try:
        with tracing():  # off unless OTEL_* asks for it (README, "Tracing")
            await _stoppable_while_starting(_serve_until(settings, stop, shutdown), stop, shutdown)
    except KafkaConnectionError as error:
        # aiokafka says only "Unable to bootstrap"; its log line just before says why (TLS, SASL, address).
        raise ConfigurationError(
            f"cannot connect to Kafka at {settings.kafka_bootstrap} over {settings.kafka_security_protocol}: "
            f"{error} (the log line above says why)"
        ) from None
    except Exception as error:
        if not (stop.is_set() and shutdown.started):
            raise
        # Draining after the signal failed (the database or the broker away: the relay's last flush timed out, the
        # last offset commit was refused): nothing is lost, but the work is not finished. Exit 1 saying so, as at
        # the shutdown deadline, not 2, which means a configuration to fix (a TimeoutError is an OSError).
        shutdown.incomplete(error)
        raise typer.Exit(1) from None


async def _stoppable_while_starting(
    serving: Coroutine[Any, Any, None], stop: asyncio.Event, shutdown: Shutdown
) -> None:
    """Run ``serving``; a SIGTERM (``stop``) before the service started (waiting for a database that is away or not
    migrated yet, say) ends the wait at once, there being nothing to finish, instead of at the shutdown deadline
    with exit code 1. Once it started, SIGTERM drains as usual (``run_until``)."""
    task = asyncio.create_task(serving, name="serve")
    stopped = asyncio.create_task(stop.wait(), name="sigterm")
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and not shutdown.started:
            log.info("startup_abandoned", reason="a signal while starting: nothing to finish")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        await task
    finally:
        stopped.cancel()


async def _serve_until(settings: Settings, stop: asyncio.Event, shutdown: Shutdown | None = None) -> None:
    from booking_sessions.dev.servers import servers_for
    from booking_sessions.meeting import meeting_key
    from booking_sessions.ops.failures import port_problem

    if settings.metrics_port != 0 and (problem := port_problem(settings.metrics_host, settings.metrics_port)):
        raise ConfigurationError(problem)  # before anything starts: embedded servers take seconds
    async with servers_for(settings, _say, forbid_embedded=settings.embedded_servers == "forbid") as servers:
        # The secret first, before any connection (an operator who forgot it is not sent off to fix Kafka first);
        # the embedded servers' settings carry a throwaway one.
        meeting_key(servers.settings)
        await _require_topics(servers.settings)
        await _serve_on(servers.settings, stop, shutdown)


def _say(text: str) -> None:
    """A line about the servers on stderr, never read as markup (a path or URL may hold brackets)."""
    err.print(line(text), highlight=False)


async def _require_topics(settings: Settings) -> None:
    """Stop with one line unless the three topics exist: the consumer and producer would make a typo'd one on a
    broker that auto-creates topics, and consume nothing from it (README, "Running it"). KafkaConnectionError
    passes on to ``_serve``, which names the address and the security protocol."""
    from booking_sessions.kafka_options import kafka_client_options
    from booking_sessions.ops.failures import absent_topic, no_answer

    bootstrap = settings.kafka_bootstrap or ""
    topics = {
        "BOOKING_INPUT_TOPIC": settings.input_topic,
        "BOOKING_OUTPUT_TOPIC": settings.output_topic,
        "BOOKING_DLQ_TOPIC": settings.dlq_topic,
    }
    started = time.monotonic()
    try:
        missing = await absent_topic(bootstrap, topics, **kafka_client_options(settings))
    except TimeoutError:
        raise ConfigurationError(
            f"cannot reach Kafka at {bootstrap}: {no_answer(time.monotonic() - started)}"
        ) from None
    if missing is not None:
        raise ConfigurationError(missing)


async def _serve_on(settings: Settings, stop: asyncio.Event, shutdown: Shutdown | None) -> None:
    from booking_sessions.observe.http import serving
    from booking_sessions.observe.metrics import Metrics
    from booking_sessions.runtime import tune_gc
    from booking_sessions.service import open_service, run_until

    metrics = Metrics()
    with contextlib.ExitStack() as http:
        # Served from before the start, which waits for a database that is away or not migrated yet: /healthz says
        # "starting" (200) and /readyz 503 meanwhile. Served only once started, a liveness probe found no port and
        # restarted the pod while a migrate job ran or the database was down: a crash loop (a newcomer's find).
        endpoints = None
        if settings.metrics_port != 0:
            endpoints = http.enter_context(
                serving(metrics.registry, None, settings.metrics_host, settings.metrics_port)
            )
        async with open_service(settings, metrics=metrics) as service:
            log.info(
                "service_started",
                input_topic=settings.input_topic,
                group_id=settings.group_id,
                output_topic=settings.output_topic,
                dlq_topic=settings.dlq_topic,
                kafka_security_protocol=settings.kafka_security_protocol,
            )
            tune_gc()
            if shutdown is not None:
                shutdown.unfinished = service.unfinished
                shutdown.started = True
            if endpoints is not None:
                endpoints.health = service.health
            await run_until(service, stop)


@command
def migrate() -> None:
    """Apply the database schema (Alembic) up to the newest revision; safe to run again."""
    settings = settings_or_fail()
    configure_logging(settings.logging_level(), secrets=settings.secret_values())
    if settings.database_url is None:
        fail("BOOKING_DATABASE_URL is not set (e.g. postgresql+asyncpg://user:pw@127.0.0.1:5432/db)")
    from booking_sessions.database_tls import database_connect_args
    from booking_sessions.migrate import NewerSchema, upgrade_head
    from booking_sessions.ops.failures import no_answer, one_line, shown_url

    url = settings.database_url_value()
    # asyncpg's connect timeout (60 s by default) bounded like every other command's; no command timeout: a
    # migration may rightly wait for a concurrent one's advisory lock, or rewrite a big table.
    connect_args = {**database_connect_args(settings), "timeout": settings.database_connect_timeout_s}
    started = time.monotonic()
    try:
        upgrade_head(url, connect_args)
    except NewerSchema as newer:
        # A rollback of the image runs its `migrate` job too: every migration is expand-only, so this release runs
        # on the newer schema, and there is nothing to do. Before, a 117-line traceback and exit code 1 (a
        # newcomer's find) stopped the rollback.
        err.print(
            f"the schema is at revision {newer.revision}, newer than this release's newest ({newer.newest}): left "
            "as it is; every migration is expand-only, so this release runs on it (README, Deploy)",
            highlight=False,
        )
        return
    except ConfigurationError as error:
        fail(str(error))
    except Exception as error:
        reason = no_answer(time.monotonic() - started) if isinstance(error, TimeoutError) else one_line(error)
        if reason is None:
            raise  # a bug: its traceback
        fail(f"cannot reach the database at {shown_url(url)}: {reason}")
    err.print("schema is at the newest revision")


@command
def demo() -> None:
    """Run the seed's scenarios through the real consumer, database and relay; exit 0 only if every check held.

    Uses embedded servers unless BOOKING_KAFKA_BOOTSTRAP and BOOKING_DATABASE_URL are set (whatever
    BOOKING_EMBEDDED_SERVERS says); on configured servers it works on its own demo-* topics, group and booking
    ids. Without BOOKING_MEETING_SECRET its bookings get a throwaway one, never recorded as a real key.
    """
    settings = settings_or_fail()
    configure_logging(settings.logging_level(quiet=True), secrets=settings.secret_values())
    console = Console()
    ok = _run_async(lambda: _demo(settings, console))
    console.print("[green]demo passed[/]" if ok else "[red]demo failed[/]")
    raise typer.Exit(0 if ok else 1)


async def _demo(settings: Settings, console: Console) -> bool:
    from booking_sessions.dev.demo import run_demo
    from booking_sessions.dev.servers import servers_for
    from booking_sessions.ops.failures import port_problem

    if settings.metrics_port != 0 and (problem := port_problem(settings.metrics_host, settings.metrics_port)):
        raise ConfigurationError(problem)  # before anything starts: embedded servers take seconds
    async with servers_for(settings, lambda text: console.print(line(text), highlight=False)) as servers:
        return await run_demo(servers.settings, console)


@command
def asyncapi(
    output: Annotated[
        Path | None, typer.Option(help="write the document to this file instead of standard output")
    ] = None,
) -> None:
    """Print the AsyncAPI 3 document of the three topics, generated from the contract's pydantic models."""
    from booking_sessions.dev.asyncapi import render

    text = render()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        err.print(line("wrote ", str(output)))


def _register_more() -> None:
    from booking_sessions.ops.operations import register as register_operations

    register_operations(app)


_register_more()


def main() -> None:
    """The console script: like ``app()``, but a usage error is one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except Exception as error:
        # Click's UsageError (vendored inside newer typer, so matched by what it carries, not by its class):
        # an unknown option, a missing or malformed argument.
        if getattr(error, "exit_code", None) != 2 or not hasattr(error, "format_message"):
            raise
        context = getattr(error, "ctx", None)
        command = getattr(context, "command_path", "booking-sessions")
        # The message quotes the command line: shown as written, never read as markup.
        err.print(line(("error:", "red"), f" {error.format_message()} (see: {command} --help)"), highlight=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
