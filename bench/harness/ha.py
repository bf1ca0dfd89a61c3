"""A leader and standbys as real processes: ``firsthop-scheduler`` x N on one PostgreSQL.

:class:`HaCluster` starts the schedulers on free ports of 127.0.0.1 (each keeps its port across
restarts, so the address list clients and agents were given stays right), the first one
leading, the others printing ``standby: waiting for the leader lease``. :meth:`HaCluster.
kill_leader` SIGKILLs the leader and measures two times from the signal:

- ``takeover_s``: until a standby prints ``leading with epoch N`` (the lease is its and the
  state is loaded: it serves);
- ``serving_s``: until a client given every address gets an answer (what users see: it
  includes the client's backoff while it looks for the leader).

The killed scheduler is then started again on its port, as a standby, so each failover starts
from the same number of schedulers. :class:`Submitter` is a client thread submitting jobs with
submission ids (idempotency keys) as fast as it is answered, recording which were
acknowledged.

Shared by ``tests/test_ha_processes.py`` and ``bench/failover.py``. Must not be imported by the
production packages.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.postgres import free_port
from bench.harness.procs import WAIT_S, Proc, scheduler_argv
from scheduler.client import FirsthopClient
from scheduler.jobspec import JobSpec
from topology.errors import FirsthopError

LEADING = "leading with epoch "
STANDBY = "standby: waiting for the leader lease"


@dataclass(frozen=True)
class Takeover:
    """One failover: the new leader's index and epoch, and the times from the SIGKILL."""

    leader: int
    epoch: int
    takeover_s: float
    serving_s: float


class HaCluster:
    """``count`` schedulers sharing ``db_url`` (see the module docstring).

    Args:
        workdir: where logs go.
        topology: the topology file every scheduler serves.
        db_url: the PostgreSQL database they share.
        count: how many schedulers (one leads).
        env: extra environment of the schedulers (``FIRSTHOP_*`` settings).
    """

    def __init__(
        self,
        workdir: Path,
        topology: Path,
        db_url: str,
        *,
        count: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.topology = topology
        self.db_url = db_url
        self.env = dict(env or {})
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        self.procs: list[Proc | None] = [None] * count
        self.leader: int | None = None
        self.epoch = 0
        self._starts = 0

    @property
    def servers(self) -> str:
        """The ``--server`` list of every scheduler."""
        return ",".join(self.addresses)

    def _start(self, index: int) -> Proc:
        self._starts += 1
        argv = scheduler_argv(
            self.db_url, self.topology, listen=self.addresses[index], log_level="INFO"
        )
        log = self.workdir / f"scheduler-{index}-{self._starts}.log"
        proc = Proc(argv, log, env=self.env)
        self.procs[index] = proc
        return proc

    def start(self) -> None:
        """Start the first scheduler, wait until it leads, then the standbys."""
        first = self._start(0)
        self.epoch = int(first.wait_line(LEADING).split()[-1])
        self.leader = 0
        for index in range(1, len(self.addresses)):
            self._start(index).wait_line(STANDBY)

    def proc(self, index: int) -> Proc:
        """The running process of scheduler ``index``."""
        proc = self.procs[index]
        if proc is None:
            raise AssertionError(f"scheduler {index} is not running")
        return proc

    def wait_new_leader(self, candidates: list[int], timeout: float = WAIT_S) -> int:
        """Wait until one of ``candidates`` prints that it leads; its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in candidates:
                try:
                    line = self.proc(index).lines.get(timeout=0.01)
                except queue.Empty:
                    continue
                if line is not None and line.startswith(LEADING):
                    epoch = int(line.split()[-1])
                    if epoch <= self.epoch:
                        raise AssertionError(f"epoch went from {self.epoch} to {epoch}")
                    self.epoch, self.leader = epoch, index
                    return index
        raise AssertionError(f"no scheduler of {candidates} took over within {timeout} s")

    def kill_leader(self) -> Takeover:
        """SIGKILL the leader; time the takeover; restart the killed one as a standby."""
        old = self.leader
        if old is None:
            raise AssertionError("no leader")
        others = [i for i in range(len(self.addresses)) if i != old]
        with ThreadPoolExecutor(max_workers=1) as pool:
            killed_at = time.monotonic()
            self.proc(old).stop(signal.SIGKILL)
            serving = pool.submit(_first_answer, self.servers, killed_at)
            new = self.wait_new_leader(others)
            takeover_s = time.monotonic() - killed_at
            serving_s = serving.result(timeout=WAIT_S)
        self._start(old).wait_line(STANDBY)
        return Takeover(new, self.epoch, takeover_s, serving_s)

    def restart_cold(self) -> float:
        """Without a standby: SIGKILL the leader, start it again, time until it leads (what a
        lone scheduler's failure costs when a supervisor restarts it at once)."""
        index = self.leader
        if index is None:
            raise AssertionError("no leader")
        killed_at = time.monotonic()
        self.proc(index).stop(signal.SIGKILL)
        proc = self._start(index)
        epoch = int(proc.wait_line(LEADING).split()[-1])
        elapsed = time.monotonic() - killed_at
        self.epoch = epoch
        return elapsed

    def stop(self) -> dict[int, int]:
        """SIGTERM every scheduler; their exit codes by index."""
        codes = {}
        for index, proc in enumerate(self.procs):
            if proc is not None:
                codes[index] = proc.stop()
                self.procs[index] = None
        return codes


def _first_answer(servers: str, since: float) -> float:
    with FirsthopClient(servers, timeout_s=5.0, failover_s=WAIT_S) as client:
        client.cluster_status()
    return time.monotonic() - since


@dataclass
class Submitter:
    """A thread submitting ``make()`` with submission ids ``{prefix}-{n}`` until stopped."""

    servers: str
    make: Callable[[], JobSpec]
    prefix: str = "s"
    acknowledged: dict[str, str] = field(default_factory=dict)
    """Submission id -> job id, for every submission the scheduler acknowledged."""
    failed: list[str] = field(default_factory=list)
    """Reasons of submissions that got no acknowledgement (the client gave up)."""
    repeated: list[str] = field(default_factory=list)
    """Submission ids answered ``created=False``: the client retried a call whose first try
    was committed but not answered (the leader died in between) and got the same job."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin submitting in a background thread."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="submitter")
        self._thread.start()

    def _run(self) -> None:
        with FirsthopClient(self.servers, timeout_s=10.0, failover_s=WAIT_S) as client:
            n = 0
            while not self._stop.is_set():
                sid = f"{self.prefix}-{n}"
                n += 1
                try:
                    job, created = client.submit_job(self.make(), submission_id=sid)
                except FirsthopError as exc:
                    self.failed.append(exc.reason)
                    continue
                if not created:
                    self.repeated.append(sid)
                self.acknowledged[sid] = job.id
                # Pace: a few submissions a second, so the stream spans every failover
                # without piling up thousands of pending jobs on a 2-core machine.
                self._stop.wait(0.05)

    def stop(self) -> None:
        """Stop submitting and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WAIT_S)
