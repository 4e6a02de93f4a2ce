"""What every stage of the bench stands on: its topics, databases, service processes and progress bars, named by
one tag per run, and their clean-up."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from bench.cpu import Servers
from bench.databases import create_database, drop_databases
from bench.report import Results
from bench.service_path import Fleet
from booking_sessions.settings import Settings


@dataclass(frozen=True)
class Options:
    events: int = 200_000
    partitions: int = 12
    consumers: int = 1  # processes of the scale-out stage; 1: no such stage
    naive_events: int = 5_000  # the baseline and the peer run on a sample of whole bookings of about this many records
    latency_s: float = 10.0
    seed: int = 7
    profile_dir: Path | None = None  # py-spy the service processes of (d), (e), (f, h2) and (g) into this directory
    trickle_per_s: float = 20.0  # (h1): records a second, each sent alone
    latency_rate: float | None = None  # (f, h2): records a second; None: half of (d)'s rate
    warm_up_s: float = 4.0  # (h1), (f, h2) each after this many seconds of their load, drained, unmeasured; 0: cold


class Harness:
    """Names, creates and cleans up what the stages use; ``results`` is filled by the stages."""

    results: Results

    def __init__(self, settings: Settings, options: Options, console: Console, *, embedded: bool) -> None:
        assert settings.kafka_bootstrap is not None
        self.settings = settings
        self.embedded = embedded
        self.bootstrap = settings.kafka_bootstrap
        self.server_url = settings.database_url_value()
        self.servers = Servers.of(self.server_url, self.bootstrap)
        self.options = options
        self.console = console
        self.tag = secrets.token_hex(3)
        self.topics: list[str] = []
        self.databases: list[str] = []
        self.fleets: list[Fleet] = []
        self.bar = Progress(
            TextColumn("{task.description:<44}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )

    def topic(self, stage: str, kind: str) -> str:
        name = f"bench-{self.tag}-{stage}.{kind}"
        self.topics.append(name)
        return name

    async def database(self, stage: str) -> str:
        name = f"bench_{self.tag}_{stage}"
        self.databases.append(name)
        return await create_database(self.server_url, name)

    def stage_settings(self, stage: str, input_topic: str, database_url: str) -> Settings:
        return self.settings.model_copy(
            update={
                "input_topic": input_topic,
                "output_topic": self.topic(stage, "session.events"),
                "dlq_topic": self.topic(stage, "booking.events.dlq"),
                "group_id": f"bench-{self.tag}-{stage}",
                "database_url": SecretStr(database_url),
                "metrics_port": 0,
            }
        )

    def fleet(self, name: str, settings: Settings, count: int = 1) -> Fleet:
        fleet = Fleet(name, settings, count)
        self.fleets.append(fleet)
        return fleet

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[TaskID]:
        task = self.bar.add_task(description, total=total)
        try:
            yield task
        finally:
            self.bar.update(task, completed=total, visible=False)

    def advance(self, task: TaskID) -> Callable[[int], None]:
        return lambda n: self.bar.advance(task, n)

    async def clean_up(self) -> None:
        """Stop every service process; on configured servers also drop the bench's databases and topics."""
        for fleet in self.fleets:
            await fleet.stop()
        if self.embedded:
            return  # the embedded servers take everything with them
        try:
            await drop_databases(self.server_url, self.databases)
        except (SQLAlchemyError, OSError) as error:
            self.console.print(f"could not drop the bench databases {self.databases}: {error}")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            await admin.start()
            await admin.delete_topics(sorted(set(self.topics)))
        except KafkaError as error:
            self.console.print(f"could not delete the bench topics: {error!r}")
        finally:
            await admin.close()
