"""Rolling maintenance that moves a running training job (``--busy migrate``), end to end.

A scheduler (SQLite), four ``firsthop-agent run --fake-gpus 2`` hosts and a three-host
(six-rank) gloo training job that checkpoints on request (``examples/train_ddp_checkpoint.py``,
checkpoint signal SIGUSR1). A campaign over every host, one host at a time, ``--busy
migrate``: the idle host goes first; each host of the job then asks the job for a checkpoint,
and only the ranks on that host move (to a host already done) before the job restarts from
that checkpoint. The scheduler is SIGKILLed once the first move is done and restarted on the
same address. The campaign ends with every host's action run exactly once, the job is never
stopped without a checkpoint newer than the request, and it ends SUCCEEDED with parameters
``torch.equal`` to an undisturbed run of the same training.

Waits poll conditions with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from bench.harness.procs import wait_until
from scheduler.cli.ctl import app as ctl_app
from scheduler.client import JobState, NodeState

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = hosts(4)
WORLD = 6
STEPS = 200
CHECKPOINT_EVERY = 5
STEP_TIME_S = 0.05
WAIT_S = 240.0
SERVER_ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": "0.3",
    "FIRSTHOP_HEARTBEAT_TIMEOUT_S": "3",
    "FIRSTHOP_TICK_INTERVAL_S": "0.1",
    "FIRSTHOP_STOP_GRACE_S": "3",
    "FIRSTHOP_FENCE_AFTER_S": "0",  # the scheduler is SIGKILLed and restarted mid-campaign
}
ACTION = (
    "import os, pathlib, sys\n"
    "with open(pathlib.Path(sys.argv[1]) / 'runs.log', 'a') as f:\n"
    "    f.write(os.environ['FIRSTHOP_CAMPAIGN'] + ' ' + os.environ['FIRSTHOP_HOST'] + '\\n')\n"
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path, len(HOSTS), env=SERVER_ENV, wait_s=WAIT_S) as c:
        yield c


def _train_argv(step_time: float) -> list[str]:
    return train_argv(STEPS, CHECKPOINT_EVERY, step_time)


def _status(cluster: LocalCluster, name: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        ctl_app,
        ["maintenance", "status", name, "--output", "json", "--server", cluster.address],
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def _runs(root: Path) -> Counter[str]:
    log = root / "runs.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines)


def test_a_campaign_moves_the_training_job_host_by_host_through_a_sigkill(
    cluster: LocalCluster,
) -> None:
    root = cluster.root
    reference_ranks, reference = reference_run(root, WORLD, STEPS, CHECKPOINT_EVERY)
    try:
        ckpt = root / "ckpt"
        job_id = cluster.submit(
            {
                "name": "train",
                "gpus": WORLD,
                "command": _train_argv(STEP_TIME_S),
                "checkpoint": {"dir": str(ckpt), "signal": "SIGUSR1", "grace_s": 60},
            },
        )
        first = wait_until(
            lambda: j if (j := cluster.job(job_id)).last_checkpoint_at is not None else None,
            "a first checkpoint",
            WAIT_S,
        )
        assert first.state is JobState.RUNNING
        assert first.placement is not None
        start = CliRunner().invoke(
            ctl_app,
            [
                "maintenance",
                "start",
                "upg",
                "--server",
                cluster.address,
                "--hosts",
                "all",
                "--max-unavailable",
                "1",
                "--busy",
                "migrate",
                "--",
                sys.executable,
                "-c",
                ACTION,
                str(root),
            ],
        )
        assert start.exit_code == 0, start.output

        # SIGKILL the scheduler once the job has been moved once; restart it in place.
        wait_until(
            lambda: _status(cluster, "upg")["jobs_moved"] == 1 or None, "a first move", WAIT_S
        )
        address = cluster.address
        cluster.scheduler.stop(signal.SIGKILL)
        cluster.start_scheduler(address)

        final = wait_until(
            lambda: (
                s
                if (s := _status(cluster, "upg"))["state"] in {"SUCCEEDED", "FAILED", "PAUSED"}
                else None
            ),
            "the campaign finished",
            WAIT_S,
        )
        done = wait_until(
            lambda: (
                j
                if (j := cluster.job(job_id)).state
                in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
                else None
            ),
            "the job finished",
            WAIT_S,
        )
        codes = wait_all(reference_ranks)
    finally:
        wait_all(reference_ranks)

    assert final["state"] == "SUCCEEDED", final
    assert _runs(root) == Counter(dict.fromkeys(HOSTS, 1))  # each action exactly once
    assert {h["state"] for h in final["hosts"]} == {"DONE"}
    assert final["jobs_moved"] == 1
    assert final["gpu_hours_lost"] == 0.0
    assert codes == [0] * WORLD, f"reference run failed; see {root}/reference-*.log"
    assert done.state is JobState.SUCCEEDED, (done.message, done.failures)
    assert done.failures
    for failure in done.failures:  # every stop was a move answered with a fresh checkpoint
        assert failure.reason == "preempted"
        assert failure.message.startswith("moved for maintenance campaign upg")
        assert failure.checkpointed
        assert failure.lost_s == 0.0
    assert done.restarts == len(done.failures)
    # Moved off each of the job's hosts the campaign reached while it ran (at least the first);
    # each move kept the other hosts' ranks where they were. (Repairs recorded before the
    # restart are kept once the store persists them.)
    assert all(r.method == "partial" for r in done.repairs)
    logs = [
        line
        for host in HOSTS
        for log in cluster.log_dir(host).glob(f"{job_id}/attempt-*/rank-*.log")
        for line in log.read_text().splitlines()
    ]
    assert any("SIGUSR1 received, checkpoint written" in line for line in logs)
    assert same_parameters(ckpt / "final.pt", reference)
    with cluster.client() as client:
        assert {n.state for n in client.list_nodes()} == {NodeState.READY}
