"""Real agents on one machine: a scheduler (SQLite), three ``firsthop-agent run`` processes each
pretending to be a host with two GPUs (``--fake-gpus 2``), and real rank processes.

- The ranks a program sees (``RANK``, ``LOCAL_RANK``, ``NODE_RANK``, ``CUDA_VISIBLE_DEVICES``,
  host) are the placement's rank table, when the agent starts each rank and when torchrun
  (``--rdzv-backend=static``, one process per host) starts them.
- The scheduler restarted (SIGTERM, then SIGKILL) while a job runs: the agents reconnect and
  re-report, the job keeps running in the same processes (same attempt, no restart).
- A two-host torch job (gloo, four ranks) that checkpoints: one host's agent and ranks are
  SIGKILLed mid-run; the scheduler restarts the job on the remaining hosts from the last
  checkpoint and it ends with parameters identical to an uninterrupted run with the same seed.

The tests share one cluster (module fixture) and run in this order; the last one kills a host.
Waits poll conditions with deadlines or wait for announced lines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.harness.local_cluster import (
    LocalCluster,
    hosts,
    local_cluster,
    reference_run,
    same_parameters,
    train_argv,
    wait_all,
)
from bench.harness.procs import BIN, alive, wait_until
from scheduler.cli.user import app as user_app
from scheduler.client import JobState, JobView

pytestmark = pytest.mark.e2e

HOSTS = hosts(3)
SERVER_ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": "0.3",
    "FIRSTHOP_HEARTBEAT_TIMEOUT_S": "3",
    "FIRSTHOP_TICK_INTERVAL_S": "0.1",
    "FIRSTHOP_STOP_GRACE_S": "3",
    # A scheduler restart here takes longer than a fence time under a 3 s heartbeat timeout
    # could be; fencing has its own test (test_e2e_repair.py).
    "FIRSTHOP_FENCE_AFTER_S": "0",
}
JOB_WAIT_S = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("agents")
    with local_cluster(root, len(HOSTS), env=SERVER_ENV, wait_s=JOB_WAIT_S) as c:
        yield c


# ---------------------------------------------------------------------------- the rank table

ENV_DUMP = (
    "import json, os, pathlib, sys\n"
    "keys = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'NODE_RANK', 'MASTER_ADDR',"
    " 'MASTER_PORT', 'CUDA_VISIBLE_DEVICES', 'FIRSTHOP_HOST', 'FIRSTHOP_NODE_RANK',"
    " 'FIRSTHOP_NNODES', 'FIRSTHOP_JOB_ID', 'FIRSTHOP_RESTART_COUNT']\n"
    "out = pathlib.Path(sys.argv[1]) / ('rank-' + os.environ['RANK'] + '.json')\n"
    "out.write_text(json.dumps({k: os.environ.get(k) for k in keys}))\n"
)


def test_ranks_see_the_placement_rank_table(cluster: LocalCluster) -> None:
    out = cluster.root / "envs"
    out.mkdir()
    job_id = cluster.submit(
        {"name": "env", "gpus": 4, "command": [sys.executable, "-c", ENV_DUMP, str(out)]},
    )

    job = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED})

    _check_rank_table(job, out)


TORCHRUN = (
    'exec "$0" -m torch.distributed.run --rdzv-backend=static'
    ' --node-rank "$FIRSTHOP_NODE_RANK" --nnodes "$FIRSTHOP_NNODES"'
    ' --nproc-per-node "$LOCAL_WORLD_SIZE" --master-addr "$MASTER_ADDR"'
    ' --master-port "$MASTER_PORT" "$@"'
)


@pytest.mark.slow
def test_torchrun_with_the_static_rendezvous_keeps_the_rank_table(cluster: LocalCluster) -> None:
    out = cluster.root / "torchrun"
    out.mkdir()
    script = out / "env_dump.py"
    script.write_text(ENV_DUMP)
    command = ["bash", "-c", TORCHRUN, sys.executable, str(script), str(out)]
    job_id = cluster.submit(
        {"name": "torchrun", "gpus": 4, "launch": "per_host", "command": command}
    )

    job = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED})

    _check_rank_table(job, out)


def _check_rank_table(job: JobView, out: Path) -> None:
    """The environment each rank wrote to ``out`` is the job's rank table."""
    assert job.state is JobState.SUCCEEDED, job.message
    table = job.last_placement
    assert table is not None
    seen = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(seen) == [0, 1, 2, 3]
    hosts = table.hosts
    for slot in table.ranks:
        env = seen[slot.rank]
        local = [s for s in table.ranks if s.host == slot.host]
        devices = env["CUDA_VISIBLE_DEVICES"].split(",")
        assert env["FIRSTHOP_HOST"] == slot.host
        assert env["RANK"] == str(slot.rank)
        assert env["LOCAL_RANK"] == str(local.index(slot))
        assert devices == [str(s.gpu) for s in local]
        assert devices[int(env["LOCAL_RANK"])] == str(slot.gpu)
        assert env["NODE_RANK"] == env["FIRSTHOP_NODE_RANK"] == str(hosts.index(slot.host))
        assert env["WORLD_SIZE"] == "4"
        assert env["LOCAL_WORLD_SIZE"] == str(len(local))
        assert env["FIRSTHOP_NNODES"] == str(len(hosts))
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert env["FIRSTHOP_JOB_ID"] == job.id
        assert env["FIRSTHOP_RESTART_COUNT"] == "0"
    assert len({e["MASTER_PORT"] for e in seen.values()}) == 1


def test_an_agent_the_topology_does_not_know_exits_3(cluster: LocalCluster) -> None:
    argv = [str(BIN / "firsthop-agent"), "run", "--server", cluster.address, "--host", "h9999"]
    result = subprocess.run(
        [*argv, "--fake-gpus", "2"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown_node: ")


# ---------------------------------------------------------------------------- scheduler restart

WAIT_FOR_GO = (
    "import os, pathlib, sys, time\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "(out / ('pid-' + os.environ['RANK'])).write_text(str(os.getpid()))\n"
    "while not (out / 'go').exists():\n"
    "    time.sleep(0.05)\n"
)


def _heard_from_all_since(cluster: LocalCluster, since: datetime) -> bool:
    with cluster.client() as client:
        nodes = client.list_nodes()
    return all(
        n.last_heartbeat_at is not None and n.last_heartbeat_at > since
        for n in nodes
        if n.name in HOSTS
    )


@pytest.mark.slow
def test_a_restarted_scheduler_readopts_the_running_job(cluster: LocalCluster) -> None:
    out = cluster.root / "readopt"
    out.mkdir()
    job_id = cluster.submit(
        {"name": "long", "gpus": 4, "command": [sys.executable, "-c", WAIT_FOR_GO, str(out)]},
    )
    running = cluster.wait_job(job_id, {JobState.RUNNING})
    pids = wait_until(
        lambda: sorted(out.glob("pid-*")) if len(list(out.glob("pid-*"))) == 4 else None,
        "four ranks running",
    )
    rank_pids = {p.name: int(p.read_text()) for p in pids}

    states = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        address = cluster.address
        cluster.scheduler.stop(sig)
        restarted_at = datetime.now(UTC)
        cluster.start_scheduler(address)
        assert cluster.address == address
        wait_until(partial(_heard_from_all_since, cluster, restarted_at), "agents back")
        with cluster.client() as client:
            states.append(client.get_job(job_id))
    (out / "go").touch()
    done = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED})

    assert [(j.state, j.restarts) for j in states] == [(JobState.RUNNING, 0)] * 2
    assert all(j.started_at == running.started_at for j in states)
    assert len(list(out.glob("pid-*"))) == 4  # no rank was started again
    assert {p.name: int(p.read_text()) for p in out.glob("pid-*")} == rank_pids
    assert done.state is JobState.SUCCEEDED, (done.reason, done.message, done.failures)
    assert done.restarts == 0
    assert done.failures == ()


# ---------------------------------------------------------------------------- host failure

STEPS = 60
CHECKPOINT_EVERY = 5
STEP_TIME_S = 0.05
"""Enough for the job to be mid-run when the test has seen its first checkpoint."""


@pytest.mark.slow
def test_a_killed_host_is_recovered_from_the_checkpoint_with_identical_parameters(
    cluster: LocalCluster,
) -> None:
    # The same training, undisturbed, beside the job.
    reference_ranks, reference = reference_run(cluster.root, 4, STEPS, CHECKPOINT_EVERY)
    try:
        ckpt = cluster.root / "ckpt"
        job_id = cluster.submit(
            {
                "name": "train",
                "gpus": 4,
                "command": train_argv(STEPS, CHECKPOINT_EVERY, STEP_TIME_S),
                "checkpoint": {"dir": str(ckpt), "interval_s": 1},
                "max_restarts": 3,
            },
        )

        def checkpointed() -> JobView | None:
            with cluster.client() as client:
                job = client.get_job(job_id)
            return job if job.last_checkpoint_at is not None else None

        first = wait_until(checkpointed, "a checkpoint reported", JOB_WAIT_S)
        assert first.state is JobState.RUNNING
        assert first.placement is not None
        victim = first.placement.hosts[0]  # the host of rank 0 (and of the rendezvous)
        cluster.kill_host(victim)
        done = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED})
        codes = wait_all(reference_ranks)
    finally:
        # A failure above must not leave the reference ranks running (their pipes would
        # raise ResourceWarnings in a later test).
        for proc in reference_ranks:
            proc.stop()  # closes its log even when it already exited

    assert codes == [0, 0, 0, 0], f"reference run failed; see {cluster.root}/reference-*.log"
    assert done.state is JobState.SUCCEEDED, done.message
    assert done.restarts == 1
    assert len(done.failures) == 1
    assert done.failures[0].reason in ("rank_exited", "node_lost")
    assert done.last_placement is not None
    assert victim not in done.last_placement.hosts
    resumed = [
        line
        for host in done.last_placement.hosts
        for log in (cluster.log_dir(host) / job_id / "attempt-1").glob("rank-*.log")
        for line in log.read_text().splitlines()
        if "starting at step" in line
    ]
    steps = {int(line.split("starting at step ")[1].split()[0]) for line in resumed}
    assert len(resumed) == 4
    assert len(steps) == 1
    (step,) = steps
    assert 0 < step < STEPS
    assert step % CHECKPOINT_EVERY == 0
    assert same_parameters(ckpt / "final.pt", reference)

    def lost() -> bool:
        with cluster.client() as client:
            return client.get_node(victim).state.value == "LOST"

    wait_until(lost, f"{victim} LOST")  # an in-place repair may finish before the timeout
    assert not any(alive(pid) for pid in cluster.ranks_on(victim))
    # `firsthop logs` reads rank 0's log of the last attempt from its host's agent.
    logs = CliRunner().invoke(user_app, ["logs", job_id, "--rank", "0", "-s", cluster.address])
    assert logs.exit_code == 0, logs.output
    assert f"rank 0/4 starting at step {step} (restart count 1)" in logs.stdout
    assert logs.stdout.rstrip().endswith(f"done after {STEPS} steps")
