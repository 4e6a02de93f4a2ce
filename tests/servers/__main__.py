"""``python -m tests.servers CMD ...``: run one command against the servers the test ladder picks.

Starts the broker and PostgreSQL the fixtures would (``BOOKING_TEST_KAFKA`` / ``BOOKING_TEST_POSTGRES`` choose, as
for the tests: README "Tests"), runs CMD with ``BOOKING_KAFKA_BOOTSTRAP`` and ``BOOKING_DATABASE_URL`` set to them,
stops both, and exits with CMD's exit code. For measuring on Apache Kafka what the bench measures on the embedded
servers by default, e.g.::

    BOOKING_TEST_KAFKA=apache BOOKING_TEST_POSTGRES=debian .venv/bin/python -m tests.servers \\
        .venv/bin/python -m bench run
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers.ladder import kafka_server, postgres_server


def main(command: list[str]) -> int:
    """Run ``command`` against the ladder's servers; return its exit code (2 without a command)."""
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    with kafka_server() as kafka, postgres_server() as postgres:
        env = {**os.environ, "BOOKING_KAFKA_BOOTSTRAP": kafka.bootstrap, "BOOKING_DATABASE_URL": postgres.url}
        print(f"servers: kafka={kafka.kind} {kafka.bootstrap} postgres={postgres.kind}", file=sys.stderr, flush=True)
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
