"""The ``booking-sessions`` command. Builds settings, servers and clients, and hands them to the service."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from booking_sessions.logs import configure_logging
from booking_sessions.settings import Settings
from models.errors import ConfigurationError

app = typer.Typer(
    help="Booking events in, one live session per booking, SessionCreated out (see README.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(f"BOOKING_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        _fail(f"invalid configuration: {problems}")


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(factory())
    except ConfigurationError as error:
        _fail(str(error))
    except (OSError, ConnectionError) as error:
        _fail(f"{type(error).__name__}: {error}")
    raise AssertionError("unreachable")


@app.command()
def run() -> None:
    """Consume booking events and relay session events until SIGTERM or SIGINT (then drain and commit).

    With neither BOOKING_KAFKA_BOOTSTRAP nor BOOKING_DATABASE_URL set, starts an embedded broker and
    PostgreSQL and says where they are.
    """
    settings = _settings()
    configure_logging(settings.log_level)
    _run_async(lambda: _serve(settings))


async def _serve(settings: Settings) -> None:
    from booking_sessions.servers import servers_for
    from booking_sessions.service import open_service, run_until

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            err.print("second signal: exiting at once")
            os._exit(1)
        timeout_s = settings.shutdown_timeout_s
        err.print(
            f"{signal.Signals(signum).name}: finishing the batch in hand, committing, flushing the relay "
            f"(at most {timeout_s:g} s; a second signal exits at once)"
        )
        stop.set()
        loop.call_later(timeout_s, _give_up, timeout_s)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    async with (
        servers_for(settings, err.print) as servers,
        open_service(servers.settings) as service,
    ):
        err.print(
            f"consuming {servers.settings.input_topic!r} as group {servers.settings.group_id!r}; "
            f"publishing to {servers.settings.output_topic!r}; dead letters to {servers.settings.dlq_topic!r}"
        )
        await run_until(service, stop)


def _give_up(timeout_s: float) -> None:
    # Nothing uncommitted is lost: offsets trail the database, so the next owner redelivers and the inbox
    # drops what was already applied.
    err.print(f"shutdown did not finish within {timeout_s:g} s: exiting without the last offset commit")
    os._exit(1)


@app.command()
def migrate() -> None:
    """Apply the database schema (Alembic) up to the newest revision; safe to run again."""
    settings = _settings()
    configure_logging(settings.log_level)
    if settings.database_url is None:
        _fail("BOOKING_DATABASE_URL is not set (e.g. postgresql+asyncpg://user:pw@127.0.0.1:5432/db)")
    from booking_sessions.migrate import upgrade_head

    try:
        upgrade_head(settings.database_url_value())
    except (OSError, ConnectionError) as error:
        _fail(f"cannot reach the database: {error}")
    err.print("schema is at the newest revision")


@app.command()
def demo() -> None:
    """Run the seed's scenarios through the real consumer, database and relay; exit 0 only if every check held.

    Uses embedded servers unless BOOKING_KAFKA_BOOTSTRAP and BOOKING_DATABASE_URL are set; on configured
    servers it works on its own demo-* topics, group and booking ids.
    """
    settings = _settings()
    configure_logging(os.environ.get("BOOKING_LOG_LEVEL", "WARNING"))
    console = Console()
    ok = _run_async(lambda: _demo(settings, console))
    console.print("[green]demo passed[/]" if ok else "[red]demo failed[/]")
    raise typer.Exit(0 if ok else 1)


async def _demo(settings: Settings, console: Console) -> bool:
    from booking_sessions.demo import run_demo
    from booking_sessions.servers import servers_for

    async with servers_for(settings, console.print) as servers:
        return await run_demo(servers.settings, console)


def _register_more() -> None:
    from bench.cli import register as register_bench
    from booking_sessions.operations import register as register_operations

    register_operations(app)
    register_bench(app)


_register_more()


def main() -> None:  # pragma: no cover - `python -m booking_sessions.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
