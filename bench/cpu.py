"""Where the machine's CPU went during a stage: the service processes, PostgreSQL, the broker, the bench itself.

Read from /proc (Linux); elsewhere, or for servers on another machine, that part is not reported. Only the bench's
own servers count: PostgreSQL is the postmaster listening on the bench's port and its children, the broker the
process whose command line names the bootstrap port (Tansu does; a broker configured in a file is not found).
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

_PROC = Path("/proc")
_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
CpuTimes = dict[str, float]  # role -> CPU seconds (user + system)


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    comm: str
    cpu_s: float


def _processes() -> Iterator[_Proc]:
    if not (_PROC / "self" / "stat").exists():
        return
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        yield _Proc(int(entry.name), int(fields[1]), comm, (int(fields[11]) + int(fields[12])) * _TICK_S)


def _cmdline(pid: int) -> list[str]:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


@dataclass(frozen=True)
class Servers:
    postmaster: int | None
    broker: int | None

    @classmethod
    def of(cls, database_url: str, bootstrap: str) -> Servers:
        """The local processes serving ``database_url`` and a single-server ``bootstrap``."""
        host_port = bootstrap.rpartition(":")[2]
        broker_port = int(host_port) if "," not in bootstrap and host_port.isdigit() else None
        return cls.find(make_url(database_url).port, broker_port)

    @classmethod
    def find(cls, database_port: int | None, broker_port: int | None) -> Servers:
        postmaster = broker = None
        for p in _processes():
            args = _cmdline(p.pid)
            if p.comm == "postgres" and database_port is not None and _port_arg(args) == database_port:
                postmaster = p.pid
            elif broker_port is not None and any(a.endswith(f":{broker_port}") for a in args[1:]):
                broker = p.pid
        return cls(postmaster, broker)

    def cpu_times(self, service_pids: Collection[int]) -> CpuTimes:
        """CPU seconds used so far by each role's live processes."""
        times: defaultdict[str, float] = defaultdict(float)
        for p in _processes():
            if p.pid in service_pids:
                times["service"] += p.cpu_s
            elif p.pid == os.getpid():
                times["bench"] += p.cpu_s
            elif self.postmaster is not None and self.postmaster in (p.pid, p.ppid):
                times["postgres"] += p.cpu_s
            elif p.pid == self.broker:
                times["broker"] += p.cpu_s
        return dict(times)


def _port_arg(args: list[str]) -> int | None:
    for flag, value in itertools.pairwise(args):
        if flag == "-p" and value.isdigit():
            return int(value)
    return None


def busy_note(before: CpuTimes, after: CpuTimes, wall_s: float) -> str:
    """'CPU (of one core): service 97%, postgres 61%, ...' over ``wall_s`` seconds."""
    if wall_s <= 0 or not after:
        return ""
    parts = [
        f"{role} {(after[role] - before.get(role, 0.0)) / wall_s:.0%}"
        for role in ("service", "postgres", "broker", "bench")
        if role in after
    ]
    return "CPU (of one core): " + ", ".join(parts)
