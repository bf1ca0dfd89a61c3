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

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.harness.local_cluster import LocalCluster, hosts, local_cluster
from bench.harness.procs import wait_until
from scheduler.client import JobState, JobView, NodeState

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTS = hosts(3)
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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("restart")
    # The README's agents: no --location, the default --max-backoff.
    with local_cluster(
        root, len(HOSTS), env=README_ENV, agent_flags=("--stop-grace", "3"), location=None
    ) as c:
        yield c


def _submit(cluster: LocalCluster, name: str, out: Path) -> str:
    return cluster.submit(
        {"name": name, "gpus": 4, "command": [sys.executable, "-c", WAIT_FOR_GO, str(out)]}
    )


def _node_states(cluster: LocalCluster) -> dict[str, NodeState]:
    with cluster.client() as client:
        return {n.name: n.state for n in client.list_nodes()}


def _restart_after_downtime(cluster: LocalCluster) -> float:
    """SIGKILL the scheduler, stay down ~DOWNTIME_S, start it again; monotonic restart time."""
    address = cluster.address
    cluster.kill_scheduler()
    time.sleep(DOWNTIME_S)  # the scenario's downtime, not a synchronisation
    cluster.start_scheduler(address)
    assert cluster.address == address
    return time.monotonic()


def test_restarts_with_the_readme_settings_disturb_no_job_and_drain_no_node(
    cluster: LocalCluster,
) -> None:
    out = cluster.root / "steady"
    out.mkdir()
    job_id = _submit(cluster, "steady", out)
    running = cluster.wait_job(job_id, {JobState.RUNNING})
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
            jobs.append(cluster.job(job_id))
            return time.monotonic() > until

        wait_until(watched, "one heartbeat timeout after the restart", TIMEOUT_S + 30)

    (out / "go").touch()
    done = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED})

    states = {state for snapshot in seen for state in snapshot.values()}
    assert states == {NodeState.READY}, [s for s in seen if set(s.values()) != {NodeState.READY}]
    assert {(j.state, j.restarts) for j in jobs} == {(JobState.RUNNING, 0)}
    assert all(j.started_at == running.started_at for j in jobs)
    assert {p.name: p.read_text() for p in out.glob("pid-*")} == pids  # nothing restarted
    assert done.state is JobState.SUCCEEDED
    assert done.failures == ()


def test_a_job_that_ended_during_the_downtime_is_recorded_promptly(cluster: LocalCluster) -> None:
    out = cluster.root / "ended"
    out.mkdir()
    job_id = _submit(cluster, "ended", out)
    cluster.wait_job(job_id, {JobState.RUNNING})
    wait_until(lambda: len(list(out.glob("pid-*"))) == 4, "four ranks running")

    address = cluster.address
    cluster.kill_scheduler()
    (out / "go").touch()  # the ranks exit while no scheduler runs
    time.sleep(LONG_DOWNTIME_S)  # the scenario's downtime, not a synchronisation
    cluster.start_scheduler(address)
    restarted = time.monotonic()
    restarted_at = datetime.now(UTC)
    done = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED}, timeout=60)
    took = time.monotonic() - restarted

    assert done.state is JobState.SUCCEEDED
    assert done.finished_at is not None
    assert done.finished_at >= restarted_at
    assert took < PROMPT_S, f"recorded {took:.1f} s after the restart"
    assert set(_node_states(cluster).values()) == {NodeState.READY}
