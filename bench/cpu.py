"""Where the machine's CPU went during a stage: the service processes, PostgreSQL, the broker, the bench itself,
and how busy the whole machine was (a latency taken on a machine with no core to spare is mostly a wait for one).

Read from /proc (Linux); elsewhere, or for servers on another machine, that part is not reported. Only the bench's
own servers count: PostgreSQL is the postmaster listening on the bench's port and its children, the broker the
process that holds the socket listening on the bootstrap port (Tansu, or Apache Kafka's ``java``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

_PROC = Path("/proc")
_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
CpuTimes = dict[str, float]  # role -> CPU seconds (user + system)
MachineTimes = tuple[float, float]  # (busy, all) CPU seconds of every core together since boot


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
        postmaster = None
        for p in _processes():
            if p.comm == "postgres" and database_port is not None and _port_arg(_cmdline(p.pid)) == database_port:
                postmaster = p.pid
        return cls(postmaster, _listening(broker_port) if broker_port is not None else None)

    def mark(self, service_pids: Collection[int]) -> CpuMark:
        """The counters now, for ``busy_since``."""
        return CpuMark(self.cpu_times(service_pids), machine_times(), time.monotonic())

    def busy_since(self, mark: CpuMark, service_pids: Collection[int]) -> str:
        """``busy_note`` from ``mark`` to now: each role's share of one core, and the machine's of all of them."""
        now = self.mark(service_pids)
        machine = (mark.machine, now.machine) if mark.machine is not None and now.machine is not None else None
        return busy_note(mark.roles, now.roles, now.at - mark.at, machine)

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


def _listening(port: int) -> int | None:
    """The pid of the local process holding a TCP socket that listens on ``port`` (any address), if there is one
    this user may see: the socket's inode from /proc/net/tcp{,6}, then the process with that inode among its fds."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXADDR:HEXPORT; state 0A is LISTEN; the inode is the tenth field.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue  # another user's process, or exited meanwhile
    return None


def _port_arg(args: list[str]) -> int | None:
    for flag, value in itertools.pairwise(args):
        if flag == "-p" and value.isdigit():
            return int(value)
    return None


def machine_times() -> MachineTimes | None:
    """(busy, all) CPU seconds of the whole machine since boot, every core together, from the first line of
    /proc/stat (busy: all but idle and iowait; steal counts as busy, a core the machine did not get); None where
    there is no /proc/stat."""
    try:
        fields = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) * _TICK_S, sum(ticks) * _TICK_S


@dataclass(frozen=True)
class CpuMark:
    """CPU counters at one moment (``Servers.mark``): each role's, the machine's, and when (monotonic seconds)."""

    roles: CpuTimes
    machine: MachineTimes | None
    at: float


def busy_note(
    before: CpuTimes, after: CpuTimes, wall_s: float, machine: tuple[MachineTimes, MachineTimes] | None = None
) -> str:
    """'CPU (of one core): service 97%, postgres 61%, ...' over ``wall_s`` seconds; with ``machine`` (its counters
    before and after), then '; machine 88% busy of 2 cores'."""
    if wall_s <= 0 or not after:
        return ""
    parts = [
        f"{role} {(after[role] - before.get(role, 0.0)) / wall_s:.0%}"
        for role in ("service", "postgres", "broker", "bench")
        if role in after
    ]
    note = "CPU (of one core): " + ", ".join(parts)
    if machine is not None and (all_s := machine[1][1] - machine[0][1]) > 0:
        busy = (machine[1][0] - machine[0][0]) / all_s
        note += f"; machine {busy:.0%} busy of {os.cpu_count() or 1} cores"
    return note
