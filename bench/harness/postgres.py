"""A throwaway PostgreSQL server for tests, benchmarks and demos (never for production).

:func:`start_throwaway_postgres` runs ``initdb`` into a fresh temporary directory and starts
``postgres`` on a free TCP port of 127.0.0.1 with trust authentication; ``fsync=off`` unless
asked for (nothing in a test server needs to survive the machine, while a benchmark of durable
commits passes ``fsync=True``). PostgreSQL refuses to run as root, so as root
both commands run as the ``postgres`` user through ``runuser``. Binaries are looked up on
``PATH`` and under ``/usr/lib/postgresql/*/bin`` (Debian's layout; ``apt-get install
postgresql``).

Part of the test and benchmark harness (:mod:`harness`), never of the product. Must not import
grpc, generated protos or the scheduler.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60
ATTEMPTS = 3


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL binaries, or the server would not start."""


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or ``None``."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ThrowawayPostgres:
    """A running throwaway server; :meth:`stop` removes it and its files."""

    bin_dir: Path
    root: Path
    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database``."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        dsn = f"host={self.host} port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete its directory."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                timeout=START_TIMEOUT_S,
            )
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres() -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", "postgres", "--"]


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_as_postgres(), *argv],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


def start_throwaway_postgres(*, fsync: bool = False) -> ThrowawayPostgres:
    """Start a server (see the module docstring).

    Args:
        fsync: flush the WAL to disk on commit, as a production server does.

    Raises:
        PostgresUnavailableError: no binaries, no ``postgres`` user when running as root, or
            the server failed to start (its log is in the message).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailableError(
            "PostgreSQL binaries not found (initdb on PATH or /usr/lib/postgresql/*/bin); "
            "install them with: apt-get install -y postgresql"
        )
    # As root the directory must be reachable by the postgres user: /tmp, not a private TMPDIR.
    parent = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
    root = Path(tempfile.mkdtemp(prefix="firsthop-pg-", dir=parent))
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailableError("running as root and no 'postgres' user") from None
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = ThrowawayPostgres(bin_dir, root, 0)
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(server.data_dir),
                "-A",
                "trust",
                "-U",
                server.user,
                "-E",
                "UTF8",
                "--no-sync",
            ],
            timeout=START_TIMEOUT_S,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailableError(f"initdb failed: {_detail(exc)}") from exc
    last = ""
    for _ in range(ATTEMPTS):
        server.port = free_port()
        durability = "-c fsync=on" if fsync else "-c fsync=off -c full_page_writes=off"
        options = (
            f"-p {server.port} -k {root} -c listen_addresses={server.host} {durability} "
            "-c synchronous_commit=on"
        )
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(server.data_dir),
                    "-o",
                    options,
                    "-l",
                    str(root / "server.log"),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "start",
                ],
                timeout=START_TIMEOUT_S + 10,
            )
            return server
        except (subprocess.SubprocessError, OSError) as exc:
            log = root / "server.log"
            last = log.read_text(errors="replace")[-2000:] if log.exists() else _detail(exc)
    shutil.rmtree(root, ignore_errors=True)
    raise PostgresUnavailableError(f"postgres did not start: {last}")


def _detail(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return (exc.stderr or exc.stdout or str(exc)).strip()[-2000:]
    return str(exc)
