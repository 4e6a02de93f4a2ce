"""Progress bars for the long operator commands: count, rate and ETA on a terminal, nothing in a pipe."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column counts bytes)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        """The task's rate as ``1,234 <unit>/s`` ("-" before rich can tell)."""
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:,.0f} {self._unit}/s", style="progress.data.speed")


def progress_bar(console: Console, unit: str = "records") -> Progress:
    """A bar per task: done/total, percent, rate, time elapsed and ETA.

    Drawn on stderr's terminal only: output piped to a file or a script gets the summary, not the animation.
    """
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
