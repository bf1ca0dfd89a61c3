"""High availability with real processes: schedulers on one PostgreSQL, simulated agents.

- SIGKILL the leader three times while a client submits a stream of jobs with submission
  ids (idempotency keys) to the list of every scheduler: each time a standby takes over
  (times reported), every acknowledged submission exists exactly once with the id it was
  acknowledged with, the long job keeps running on its agents (re-adopted: never restarted),
  and no job was restarted.
- SIGSTOP the leader: a standby deposes it once its lease is stale and takes over; when the
  old leader wakes it finds its lease gone (renewal or a fenced write, whichever comes
  first), steps down and exits 4; the long job keeps running, never restarted. (A deposed
  leader whose write is refused by the store is in ``tests/test_ha_server.py``; agents
  refusing an older epoch's commands in ``tests/test_agent_session.py``.)

Processes announce readiness on stdout (``leading with epoch``, ``connected N agents``).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_builders import spec

from bench.harness.ha import HaCluster, Submitter
from bench.harness.postgres import (
    ThrowawayPostgres,
)
from bench.harness.procs import BIN, Proc, wait_until
from scheduler.client import FirsthopClient, JobState
from topology.generators import fat_tree
from topology.spec import dump_spec

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": "0.5",
    "FIRSTHOP_HEARTBEAT_TIMEOUT_S": "15",
    "FIRSTHOP_TICK_INTERVAL_S": "0.1",
    "FIRSTHOP_LEASE_S": "2",
    "FIRSTHOP_LEADER_POLL_S": "0.1",
}


@pytest.fixture
def cluster(tmp_path: Path, postgres_server: ThrowawayPostgres) -> Iterator[tuple[HaCluster, Proc]]:
    topology = tmp_path / "cluster.yaml"
    dump_spec(fat_tree(1, 2, 2, gpus_per_host=8), topology)
    db_url = postgres_server.create_database(f"firsthop_ha_{os.urandom(4).hex()}")
    ha = HaCluster(tmp_path, topology, db_url, count=2, env=ENV)
    ha.start()
    argv = [str(BIN / "firsthop-agent"), "simulate", "--server", ha.servers]
    agents = Proc([*argv, "--topology", str(topology), "-v"], tmp_path / "agents.log")
    try:
        agents.wait_line("connected 4 agents")
        yield ha, agents
    finally:
        agents.stop()
        ha.stop()


def _running_job(servers: str) -> str:
    with FirsthopClient(servers) as client:
        job, _ = client.submit_job(spec(16, 3600, priority=5), submission_id="long")
        for view in client.watch_job(job.id):
            if view.state is JobState.RUNNING:
                return job.id
    raise AssertionError("the long job never ran")


def test_leader_sigkills_lose_no_acknowledged_job_and_restart_nothing(
    cluster: tuple[HaCluster, Proc], tmp_path: Path
) -> None:
    ha, _ = cluster
    long_job = _running_job(ha.servers)
    submitter = Submitter(ha.servers, lambda: spec(8, 0.2))
    submitter.start()
    takeovers = []
    try:
        for _ in range(3):
            _more_acknowledged(submitter)
            takeovers.append(ha.kill_leader())
        _more_acknowledged(submitter)
    finally:
        submitter.stop()
    with FirsthopClient(ha.servers) as client:
        jobs = list(client.list_jobs())
        long_view = client.get_job(long_job)
    (tmp_path / "takeovers.json").write_text(json.dumps([t.__dict__ for t in takeovers]))

    by_submission: dict[str, list[str]] = {}
    for job in jobs:
        if job.submission_id is not None:
            by_submission.setdefault(job.submission_id, []).append(job.id)
    assert submitter.acknowledged
    assert {sid: by_submission.get(sid) for sid in submitter.acknowledged} == {
        sid: [job_id] for sid, job_id in submitter.acknowledged.items()
    }
    assert long_view.state is JobState.RUNNING
    assert long_view.restarts == 0
    assert [j.id for j in jobs if j.restarts] == []
    assert [t.epoch for t in takeovers] == sorted({t.epoch for t in takeovers})
    assert all(t.takeover_s < 10.0 for t in takeovers), takeovers


def _more_acknowledged(submitter: Submitter, more: int = 5) -> None:
    target = len(submitter.acknowledged) + more
    wait_until(lambda: len(submitter.acknowledged) >= target, "more acknowledged submissions")


def test_a_paused_leader_that_wakes_stops_nothing_and_steps_down(
    cluster: tuple[HaCluster, Proc],
) -> None:
    ha, _ = cluster
    long_job = _running_job(ha.servers)
    old = ha.leader
    assert old is not None
    paused = ha.proc(old)
    paused.popen.send_signal(signal.SIGSTOP)
    try:
        # The standby ends the silent leader's database session once the lease is stale.
        ha.wait_new_leader([i for i in range(len(ha.addresses)) if i != old])
    finally:
        paused.popen.send_signal(signal.SIGCONT)
    paused.popen.wait(timeout=60)
    code = paused.stop()  # exited already: collects the status and closes the log
    ha.procs[old] = None
    with FirsthopClient(ha.servers) as client:
        long_view = client.get_job(long_job)
        nodes = client.list_nodes()

    assert code == 4
    assert "lost the leader lease" in paused.log.read_text()
    assert long_view.state is JobState.RUNNING, (long_view.reason, long_view.failures)
    assert long_view.restarts == 0
    assert {n.state.value for n in nodes} == {"READY"}
