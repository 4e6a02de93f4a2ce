"""bench.cpu finds the servers whose CPU a stage reports: the broker by the socket listening on its port."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from bench.cpu import Servers

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
