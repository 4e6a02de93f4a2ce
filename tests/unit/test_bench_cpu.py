"""bench.cpu finds the servers whose CPU a stage reports (the broker by the socket listening on its port) and says
how busy the whole machine was meanwhile."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from bench.cpu import Servers, busy_note, machine_times

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_the_broker_is_the_process_listening_on_the_bootstrap_port() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        found = Servers.of("postgresql+asyncpg://u@127.0.0.1:1/db", f"127.0.0.1:{port}")
    assert found.broker == os.getpid()
    assert found.postmaster is None


def test_no_broker_when_nothing_listens_or_the_bootstrap_names_several() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening
        assert Servers.of("postgresql+asyncpg://u@127.0.0.1:1/db", f"127.0.0.1:{port}").broker is None
    assert Servers.of("postgresql+asyncpg://u@127.0.0.1:1/db", "127.0.0.1:1,127.0.0.1:2").broker is None


def test_the_machine_note_counts_every_core_busy_while_a_process_spins() -> None:
    servers = Servers(None, None)
    mark = servers.mark([])
    spun = time.process_time() + 0.2
    while time.process_time() < spun:  # about 0.2 s of this process's CPU
        pass
    note = servers.busy_since(mark, [])
    assert "bench" in note
    busy = int(note.rpartition("; machine ")[2].split("%")[0])
    # One core spinning of os.cpu_count(): at least its share, less the tick granularity of /proc/stat.
    assert busy >= 100 // (os.cpu_count() or 1) - 10, note
    assert note.endswith(f"busy of {os.cpu_count()} cores")


def test_machine_times_are_busy_and_all_seconds_that_only_grow() -> None:
    first = machine_times()
    assert first is not None
    second = machine_times()
    assert second is not None
    assert 0 <= first[0] <= first[1]
    assert second[0] >= first[0] and second[1] >= first[1]


def test_busy_note_gives_each_role_a_share_of_one_core_and_the_machine_a_share_of_all() -> None:
    note = busy_note({"service": 1.0}, {"service": 3.0, "bench": 0.5}, 2.0, ((10.0, 40.0), (17.0, 50.0)))
    assert note == f"CPU (of one core): service 100%, bench 25%; machine 70% busy of {os.cpu_count()} cores"
    assert busy_note({}, {"service": 1.0}, 1.0) == "CPU (of one core): service 100%"
    assert busy_note({}, {}, 1.0) == ""
