"""A firsthop cluster of real processes on this machine, for end-to-end tests and benchmarks.

``firsthop-scheduler`` on a SQLite store in a temporary directory, on a free port, and
``firsthop-agent run --fake-gpus N`` processes, each pretending to be one host of a one-leaf
fat tree (``h0001``, ``h0002``, ...). Ranks are real processes. Beside it, the training example
(``examples/train_ddp_checkpoint.py``) can run undisturbed as plain local processes, with the
same environment contract, to compare final parameters with.

Every process goes through :class:`~bench.harness.procs.Proc` (output in a log file, stopped
on exit). Waits poll a condition with a deadline or wait for an announced line.

Must not import the scheduler's core, store or runtime: it drives the programs and reads
answers through the client, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.procs import BIN, WAIT_S, Proc, children_of, wait_until
from scheduler.client import FirsthopClient, JobState, JobView
from scheduler.jobspec import job_spec_from_data
from topology.generators import fat_tree
from topology.spec import dump_spec

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train_ddp_checkpoint.py"
"""The example training program: gloo, a checkpoint every few steps and on its signal."""
LOCATION = "pod00-leaf00,pod00"
"""Where every fake host sits (the generated one-leaf fat tree)."""
AGENT_FLAGS = ("--stop-grace", "3", "--max-backoff", "0.3")
"""Agent flags of the tests: a short stop grace, and prompt reconnects."""


def hosts(count: int) -> tuple[str, ...]:
    """The names of the first ``count`` hosts of the generated topology."""
    return tuple(f"h{i:04d}" for i in range(1, count + 1))


@dataclass
class LocalCluster:
    """A scheduler and its agents (see the module docstring).

    Attributes:
        root: the directory holding the store, the topology, logs and checkpoints.
        env: extra environment of the scheduler (``FIRSTHOP_*`` settings).
        gpus_per_host: fake GPUs per host.
        agent_flags: extra flags of every ``firsthop-agent run``.
        location: the agents' ``--location`` (``None``: not given).
        wait_s: how long :meth:`wait_job` waits by default.
    """

    root: Path
    env: Mapping[str, str] = field(default_factory=dict)
    gpus_per_host: int = 2
    agent_flags: Sequence[str] = AGENT_FLAGS
    location: str | None = LOCATION
    wait_s: float = WAIT_S
    address: str = ""
    agents: dict[str, Proc] = field(default_factory=dict)
    starts: int = 0
    agent_starts: int = 0
    _scheduler: Proc | None = None

    @property
    def scheduler(self) -> Proc:
        """The scheduler process last started.

        Raises:
            RuntimeError: none was started.
        """
        if self._scheduler is None:
            raise RuntimeError("the scheduler was never started")
        return self._scheduler

    @property
    def topology(self) -> Path:
        """The topology file every process reads."""
        return self.root / "cluster.yaml"

    def write_topology(self, count: int) -> None:
        """A one-leaf fat tree of ``count`` hosts."""
        dump_spec(fat_tree(1, 1, count, gpus_per_host=self.gpus_per_host), self.topology)

    def start_scheduler(self, listen: str = "127.0.0.1:0") -> Proc:
        """Start the scheduler (again, on the same store) and wait until it listens."""
        self.starts += 1
        argv = [
            str(BIN / "firsthop-scheduler"),
            "--listen",
            listen,
            "--db",
            f"sqlite:///{self.root / 'firsthop.db'}",
            "--topology",
            str(self.topology),
            "--log-level",
            "WARNING",
        ]
        proc = Proc(argv, self.root / f"scheduler-{self.starts}.log", self.env)
        self.address = proc.wait_line("listening on ", WAIT_S).split()[-1]
        self._scheduler = proc
        return proc

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler.

        Raises:
            RuntimeError: no scheduler runs, or it had exited already.
        """
        if self.scheduler.stop(signal.SIGKILL) != -signal.SIGKILL:
            raise RuntimeError("the scheduler was not running")

    def start_agent(self, host: str, *, wait: bool = False) -> Proc:
        """Start (or start again) the agent of ``host``; with ``wait``, until it is connected."""
        self.agent_starts += 1
        argv = [
            str(BIN / "firsthop-agent"),
            "run",
            "--server",
            self.address,
            "--host",
            host,
            "--address",
            "127.0.0.1",
            *(("--location", self.location) if self.location else ()),
            "--fake-gpus",
            str(self.gpus_per_host),
            "--checkpoint-path",
            str(self.root),
            "--log-dir",
            str(self.log_dir(host)),
            *self.agent_flags,
        ]
        proc = Proc(argv, self.root / f"agent-{host}-{self.agent_starts}.log")
        self.agents[host] = proc
        if wait:
            proc.wait_line(f"agent {host} connected", WAIT_S)
        return proc

    def kill_host(self, host: str) -> None:
        """SIGKILL the agent of ``host`` and the process group of each of its ranks (as if the
        machine died); the agent stays in :attr:`agents`, dead, until started again.

        Raises:
            RuntimeError: the agent had exited already.
        """
        agent = self.agents[host]
        ranks = children_of(agent.pid)
        agent.popen.send_signal(signal.SIGKILL)
        for pid in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if agent.stop(signal.SIGKILL) != -signal.SIGKILL:
            raise RuntimeError(f"the agent of {host} had exited already")

    def ranks_on(self, host: str) -> list[int]:
        """Pids of the rank processes (children of the agent) running on ``host``."""
        return children_of(self.agents[host].pid)

    def start_agents(self, names: Iterable[str]) -> None:
        """Start the agents of ``names`` and wait until every one is connected."""
        started = [self.start_agent(host) for host in names]
        for proc, host in zip(started, names, strict=True):
            proc.wait_line(f"agent {host} connected", WAIT_S)

    def log_dir(self, host: str) -> Path:
        """Where ``host``'s agent writes rank logs."""
        return self.root / f"logs-{host}"

    def client(self) -> FirsthopClient:
        """A client of the scheduler (close it, or use it in a ``with``)."""
        return FirsthopClient(self.address)

    def submit(self, data: Mapping[str, object]) -> str:
        """Submit the job spec ``data``; its id."""
        with self.client() as client:
            job, _ = client.submit_job(job_spec_from_data(dict(data)))
        return job.id

    def job(self, job_id: str) -> JobView:
        """The job as ``firsthop status`` shows it."""
        with self.client() as client:
            return client.get_job(job_id)

    def wait_job(self, job_id: str, states: set[JobState], timeout: float | None = None) -> JobView:
        """Wait until the job is in one of ``states`` (at most ``timeout``, default
        :attr:`wait_s`); the job then."""

        def reached() -> JobView | None:
            job = self.job(job_id)
            return job if job.state in states else None

        return wait_until(reached, f"job {job_id} in {sorted(states)}", timeout or self.wait_s)

    def stop(self) -> None:
        """Stop every agent, then the scheduler."""
        for proc in self.agents.values():
            proc.stop()
        if self._scheduler is not None:
            self._scheduler.stop()


@contextlib.contextmanager
def local_cluster(
    root: Path,
    count: int,
    *,
    env: Mapping[str, str] | None = None,
    agent_flags: Sequence[str] = AGENT_FLAGS,
    location: str | None = LOCATION,
    wait_s: float = WAIT_S,
) -> Iterator[LocalCluster]:
    """A started :class:`LocalCluster` of ``count`` hosts, every agent connected; stopped on
    exit."""
    cluster = LocalCluster(
        root, dict(env or {}), agent_flags=agent_flags, location=location, wait_s=wait_s
    )
    cluster.write_topology(count)
    try:
        cluster.start_scheduler()
        cluster.start_agents(hosts(count))
        yield cluster
    finally:
        cluster.stop()


def train_argv(steps: int, checkpoint_every: int, step_time: float) -> list[str]:
    """The example training program's command line."""
    return [
        sys.executable,
        str(TRAIN),
        "--steps",
        str(steps),
        "--checkpoint-every",
        str(checkpoint_every),
        "--step-time",
        str(step_time),
    ]


def reference_run(
    root: Path, world: int, steps: int, checkpoint_every: int, *, gpus_per_host: int = 2
) -> tuple[list[Proc], Path]:
    """The same training, undisturbed, as plain local processes (no scheduler), started now;
    the processes and where their final parameters will be."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ckpt = root / "reference"
    procs = []
    for rank in range(world):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank % gpus_per_host),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(gpus_per_host),
            "NODE_RANK": str(rank // gpus_per_host),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "FIRSTHOP_CHECKPOINT_DIR": str(ckpt),
            "FIRSTHOP_RESTART_COUNT": "0",
        }
        argv = train_argv(steps, checkpoint_every, 0.0)
        procs.append(Proc(argv, root / f"reference-{rank}.log", env))
    return procs, ckpt / "final.pt"


def wait_all(procs: Iterable[Proc]) -> list[int | None]:
    """Wait for every process to exit by itself; their exit codes."""
    return [p.stop(0) for p in procs]  # signal 0: only wait for the exit


def same_parameters(got: Path, want: Path) -> bool:
    """Whether two saved ``state_dict`` files hold the same tensors, bit for bit."""
    import torch

    a = torch.load(got, weights_only=True)
    b = torch.load(want, weights_only=True)
    return sorted(a) == sorted(b) and all(torch.equal(a[name], b[name]) for name in b)
