"""Scheduler restarts with the README's own agent settings disturb nothing.

Real processes: ``firsthop-scheduler`` on a SQLite file with heartbeats every 1 s and a 5 s
timeout (the README's recovery settings) and three ``firsthop-agent run --fake-gpus 2`` with the
default ``--max-backoff``.

- The scheduler is SIGKILLed while a two-host job runs and started again on the same port and
  database after about a second of downtime, twice: the job keeps running (same attempt, no
  ``node_lost``), and no node is ever LOST or DRAINED, watched until well past one heartbeat
  timeout after each restart.
- A job whose ranks exit while the scheduler is down (for ten seconds) is recorded as finished
  within a few seconds of the restart (the agents' resent reports), not minutes later.

Waits poll conditions with deadlines or wait for announced lines. The one fixed wait is the
scenario's downtime (the scheduler is dead for about a second), not a synchronisation.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.harness.procs import BIN, Proc, wait_until
from scheduler.client import FirsthopClient, JobState, JobView, NodeState
from scheduler.jobspec import job_spec_from_data
from topology.generators import fat_tree
from topology.spec import dump_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTS = ("h0001", "h0002", "h0003")
HEARTBEAT_S = 1.0
TIMEOUT_S = 5.0
README_ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
    "FIRSTHOP_HEARTBEAT_TIMEOUT_S": str(TIMEOUT_S),
}
DOWNTIME_S = 1.0
LONG_DOWNTIME_S = 10.0
"""Long enough for gRPC's default channel backoff (1 s growing by 1.6x) to have left the
agents' next connection attempt seconds after the restart."""
PROMPT_S = 4.0
"""How soon after a restart a job that ended during the downtime must be recorded."""

WAIT_FOR_GO = (
    "import os, pathlib, sys, time\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "(out / ('pid-' + os.environ['RANK'])).write_text(str(os.getpid()))\n"
    "while not (out / 'go').exists():\n"
    "    time.sleep(0.05)\n"
)


@dataclass
class Cluster:
    root: Path
    topology: Path
    address: str = ""
    scheduler: Proc | None = None
    agents: dict[str, Proc] = field(default_factory=dict)
    starts: int = 0

    def start_scheduler(self, listen: str) -> None:
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
        proc = Proc(argv, self.root / f"scheduler-{self.starts}.log", README_ENV)
        self.address = proc.wait_line("listening on ").split()[-1]
        self.scheduler = proc

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        assert self.scheduler.stop(signal.SIGKILL) == -signal.SIGKILL

    def client(self) -> FirsthopClient:
        return FirsthopClient(self.address)


def _agent(cluster: Cluster, host: str) -> Proc:
    argv = [
        str(BIN / "firsthop-agent"),
        "run",
        "--server",
        cluster.address,
        "--host",
        host,
        "--address",
        "127.0.0.1",
        "--fake-gpus",
        "2",
        "--checkpoint-path",
        str(cluster.root),
        "--log-dir",
        str(cluster.root / f"logs-{host}"),
        "--stop-grace",
        "3",
    ]  # the default --max-backoff, as the README runs them
    return Proc(argv, cluster.root / f"agent-{host}.log")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("restart")
    topology = root / "cluster.yaml"
    dump_spec(fat_tree(1, 1, len(HOSTS), gpus_per_host=2), topology)
    c = Cluster(root, topology)
    c.start_scheduler("127.0.0.1:0")
    try:
        for host in HOSTS:
            c.agents[host] = _agent(c, host)
        for host, proc in c.agents.items():
            proc.wait_line(f"agent {host} connected")
        yield c
    finally:
        for proc in c.agents.values():
            proc.stop()
        if c.scheduler is not None:
            c.scheduler.stop()


def _submit(cluster: Cluster, name: str, out: Path) -> str:
    data = {"name": name, "gpus": 4, "command": [sys.executable, "-c", WAIT_FOR_GO, str(out)]}
    with cluster.client() as client:
        job, _ = client.submit_job(job_spec_from_data(data))
    return job.id


def _job(cluster: Cluster, job_id: str) -> JobView:
    with cluster.client() as client:
        return client.get_job(job_id)


def _wait_job(cluster: Cluster, job_id: str, states: set[JobState], timeout: float = 60) -> JobView:
    def reached() -> JobView | None:
        job = _job(cluster, job_id)
        return job if job.state in states else None

    return wait_until(reached, f"job {job_id} in {sorted(states)}", timeout)


def _node_states(cluster: Cluster) -> dict[str, NodeState]:
    with cluster.client() as client:
        return {n.name: n.state for n in client.list_nodes()}


def _restart_after_downtime(cluster: Cluster) -> float:
    """SIGKILL the scheduler, stay down ~DOWNTIME_S, start it again; monotonic restart time."""
    address = cluster.address
    cluster.kill_scheduler()
    time.sleep(DOWNTIME_S)  # the scenario's downtime, not a synchronisation
    cluster.start_scheduler(address)
    assert cluster.address == address
    return time.monotonic()


def test_restarts_with_the_readme_settings_disturb_no_job_and_drain_no_node(
    cluster: Cluster,
) -> None:
    out = cluster.root / "steady"
    out.mkdir()
    job_id = _submit(cluster, "steady", out)
    running = _wait_job(cluster, job_id, {JobState.RUNNING})
    wait_until(lambda: len(list(out.glob("pid-*"))) == 4, "four ranks running")
    pids = {p.name: p.read_text() for p in out.glob("pid-*")}

    seen: list[dict[str, NodeState]] = []
    jobs: list[JobView] = []
    for _ in range(2):
        restarted = _restart_after_downtime(cluster)
        # Watch well past one heartbeat timeout from the restart: nothing may be lost.
        horizon = restarted + TIMEOUT_S + 3 * HEARTBEAT_S

        def watched(until: float = horizon) -> bool:
            seen.append(_node_states(cluster))
            jobs.append(_job(cluster, job_id))
            return time.monotonic() > until

        wait_until(watched, "one heartbeat timeout after the restart", TIMEOUT_S + 30)

    (out / "go").touch()
    done = _wait_job(cluster, job_id, {JobState.SUCCEEDED, JobState.FAILED})

    states = {state for snapshot in seen for state in snapshot.values()}
    assert states == {NodeState.READY}, [s for s in seen if set(s.values()) != {NodeState.READY}]
    assert {(j.state, j.restarts) for j in jobs} == {(JobState.RUNNING, 0)}
    assert all(j.started_at == running.started_at for j in jobs)
    assert {p.name: p.read_text() for p in out.glob("pid-*")} == pids  # nothing restarted
    assert done.state is JobState.SUCCEEDED
    assert done.failures == ()


def test_a_job_that_ended_during_the_downtime_is_recorded_promptly(cluster: Cluster) -> None:
    out = cluster.root / "ended"
    out.mkdir()
    job_id = _submit(cluster, "ended", out)
    _wait_job(cluster, job_id, {JobState.RUNNING})
    wait_until(lambda: len(list(out.glob("pid-*"))) == 4, "four ranks running")

    address = cluster.address
    cluster.kill_scheduler()
    (out / "go").touch()  # the ranks exit while no scheduler runs
    time.sleep(LONG_DOWNTIME_S)  # the scenario's downtime, not a synchronisation
    cluster.start_scheduler(address)
    restarted = time.monotonic()
    restarted_at = datetime.now(UTC)
    done = _wait_job(cluster, job_id, {JobState.SUCCEEDED, JobState.FAILED}, timeout=60)
    took = time.monotonic() - restarted

    assert done.state is JobState.SUCCEEDED
    assert done.finished_at is not None
    assert done.finished_at >= restarted_at
    assert took < PROMPT_S, f"recorded {took:.1f} s after the restart"
    assert set(_node_states(cluster).values()) == {NodeState.READY}
