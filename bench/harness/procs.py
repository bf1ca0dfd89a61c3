"""Real child processes for tests and benchmarks: children with collected stdout, and waits.

Processes announce readiness on stdout (``listening on``, ``connected N agents``, ``agent H
connected``); callers wait for those lines or poll a condition with a deadline, never for a
fixed time. Children are stopped by pid (their own, never by name).

Must not be imported by the production packages.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

BIN = Path(sys.executable).parent
WAIT_S = 60.0

T = TypeVar("T")


class Proc:
    """A child process whose stdout lines are collected by a thread (stderr goes to ``log``)."""

    def __init__(
        self,
        argv: list[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        self._err = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def _pump(self) -> None:
        stdout = self.popen.stdout
        if stdout is None:  # pragma: no cover - always piped
            return
        with stdout:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, prefix: str, timeout: float | None = None) -> str:
        """The first stdout line starting with ``prefix`` (fails on exit or after ``timeout``
        seconds, :data:`WAIT_S` by default)."""
        deadline = time.monotonic() + (WAIT_S if timeout is None else timeout)
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line; see {self.log}") from None
            if line is None:
                raise AssertionError(f"exited before {prefix!r}; see {self.log}")
            if line.startswith(prefix):
                return line

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """Send ``sig`` (if still running) and wait for the exit (SIGKILL after ``timeout``
        seconds, :data:`WAIT_S` by default); the exit status."""
        wait_s = WAIT_S if timeout is None else timeout
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            try:
                code = self.popen.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                code = self.popen.wait()
            self._pump_thread.join(wait_s)
        finally:
            self._err.close()
        return code


def stat_cpu_s(stat: str) -> float:
    """User plus system CPU seconds from the text of a ``/proc/.../stat`` file."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, tid: int | None = None) -> float:
    """CPU seconds a process (or one of its threads, ``tid``) has used so far."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    return stat_cpu_s(Path(path).read_text())


def scheduler_argv(
    db_url: str,
    topology: Path,
    *,
    listen: str = "127.0.0.1:0",
    metrics: bool = False,
    log_level: str = "WARNING",
) -> list[str]:
    """The command line of a ``firsthop-scheduler`` child (``metrics``: on any free port)."""
    argv = [str(BIN / "firsthop-scheduler"), "--listen", listen, "--db", db_url]
    argv += ["--topology", str(topology), "--log-level", log_level]
    if metrics:
        argv += ["--metrics-port", "0"]
    return argv


def wait_until(check: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """Poll ``check`` until it returns something other than ``None``/``False``; return it."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)  # polling interval of a condition with a deadline, not a sync sleep
        delay = min(delay * 2, 0.2)


def children_of(pid: int) -> list[int]:
    """Direct children of a process (Linux ``/proc``)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
