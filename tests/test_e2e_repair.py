"""In-place repair and checkpoint on request with real agents and real gloo ranks.

Four ``firsthop-agent run --fake-gpus 2`` hosts, one of them in the spare pool, and a
three-host (six-rank) gloo training job that checkpoints (``examples/train_ddp_checkpoint.py``):

- One host's agent and ranks are SIGKILLed mid-run: the job restarts from its checkpoint on
  the two survivors plus the spare, without going back through the queue; the survivors'
  ranks keep their GPUs; it ends SUCCEEDED with parameters ``torch.equal`` to an undisturbed
  run; its failure and repair records name the killed host.
- A higher-priority job preempts it gracefully: every rank gets the job's checkpoint signal,
  the ranks save at their next step and exit 0, and the preemption loses no work
  (``lost_s`` 0); the job resumes later and still ends with the undisturbed parameters.

Waits poll conditions with deadlines; nothing sleeps a fixed time. Every process a test starts
is stopped in a ``finally`` (or by the module fixture).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.local_cluster import (
    LocalCluster,
    hosts,
    local_cluster,
    reference_run,
    same_parameters,
    train_argv,
    wait_all,
)
from bench.harness.procs import Proc, wait_until
from scheduler.client import JobState, JobView

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTS = hosts(4)
SPARE = "h0004"
SERVER_ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": "0.3",
    "FIRSTHOP_HEARTBEAT_TIMEOUT_S": "3",
    "FIRSTHOP_TICK_INTERVAL_S": "0.1",
    "FIRSTHOP_STOP_GRACE_S": "3",
    "FIRSTHOP_FENCE_AFTER_S": "2",
}
JOB_WAIT_S = 240.0
WORLD = 6
STEPS = 60
CHECKPOINT_EVERY = 5
STEP_TIME_S = 0.05


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A fresh scheduler (SQLite) and four agents per test: a killed host stays dead."""
    with local_cluster(tmp_path, len(HOSTS), env=SERVER_ENV, wait_s=JOB_WAIT_S) as c:
        with c.client() as client:
            (spare,) = client.set_node_spare([SPARE], spare=True)
        assert spare.spare
        yield c


def _train_argv(step_time: float) -> list[str]:
    return train_argv(STEPS, CHECKPOINT_EVERY, step_time)


def _reference_run(root: Path) -> tuple[list[Proc], Path]:
    """The same training as plain local processes (undisturbed), beside the job."""
    return reference_run(root, WORLD, STEPS, CHECKPOINT_EVERY)


def _checkpointed(cluster: LocalCluster, job_id: str) -> JobView:
    def seen() -> JobView | None:
        job = cluster.job(job_id)
        return job if job.last_checkpoint_at is not None else None

    return wait_until(seen, f"a checkpoint of {job_id}", JOB_WAIT_S)


def test_a_killed_host_is_swapped_for_the_spare_in_place(cluster: LocalCluster) -> None:
    reference_ranks, reference = _reference_run(cluster.root)
    try:
        ckpt = cluster.root / "ckpt"
        job_id = cluster.submit(
            {
                "name": "train",
                "gpus": WORLD,
                "command": _train_argv(STEP_TIME_S),
                "checkpoint": {"dir": str(ckpt), "interval_s": 1},
                "max_restarts": 3,
            },
        )
        first = _checkpointed(cluster, job_id)
        assert first.state is JobState.RUNNING
        assert first.placement is not None
        assert SPARE not in first.placement.hosts  # spares run only preemptible jobs
        victim = first.placement.hosts[1]
        before = {s.rank: (s.host, s.gpu) for s in first.placement.ranks}
        cluster.kill_host(victim)

        done = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED})
        codes = wait_all(reference_ranks)
    finally:
        wait_all(reference_ranks)  # closes their logs even when they exited

    assert codes == [0] * WORLD, f"reference run failed; see {cluster.root}/reference-*.log"
    assert done.state is JobState.SUCCEEDED, (done.message, done.failures)
    assert done.restarts == 1
    (failure,) = done.failures
    assert failure.host == victim
    assert failure.reason in ("rank_exited", "node_lost")
    (repair,) = done.repairs
    assert repair.vacated == (victim,)
    assert repair.moves == (f"{victim}->{SPARE}",)
    assert repair.method == "partial"
    assert repair.running_at is not None
    after = done.last_placement
    assert after is not None
    assert set(after.hosts) == (set(first.placement.hosts) - {victim}) | {SPARE}
    for slot in after.ranks:
        old_host, old_gpu = before[slot.rank]
        if old_host != victim:  # survivors keep their ranks' GPUs
            assert (slot.host, slot.gpu) == (old_host, old_gpu)
        else:
            assert slot.host == SPARE
    assert same_parameters(ckpt / "final.pt", reference)


def test_a_graceful_preemption_checkpoints_and_loses_no_work(cluster: LocalCluster) -> None:
    reference_ranks, reference = _reference_run(cluster.root)
    try:
        ckpt = cluster.root / "ckpt"
        victim = cluster.submit(
            {
                "name": "low",
                "gpus": WORLD,
                "priority": 0,
                "command": _train_argv(STEP_TIME_S),
                "checkpoint": {"dir": str(ckpt), "signal": "SIGUSR1", "grace_s": 30},
            },
        )
        running = _checkpointed(cluster, victim)
        assert running.state is JobState.RUNNING
        urgent = cluster.submit(
            {"name": "urgent", "gpus": 2, "priority": 10, "command": [sys.executable, "-c", ""]},
        )
        cluster.wait_job(urgent, {JobState.SUCCEEDED})
        done = cluster.wait_job(victim, {JobState.SUCCEEDED, JobState.FAILED})
        codes = wait_all(reference_ranks)
    finally:
        wait_all(reference_ranks)  # closes their logs even when they exited

    assert codes == [0] * WORLD, f"reference run failed; see {cluster.root}/reference-*.log"
    assert done.state is JobState.SUCCEEDED, (done.message, done.failures)
    (failure,) = done.failures
    assert failure.reason == "preempted"
    assert failure.checkpointed
    assert failure.lost_s == 0.0
    assert done.lost_s == 0.0
    logs = [
        line
        for host in HOSTS
        for log in (cluster.log_dir(host) / victim / "attempt-0").glob("rank-*.log")
        for line in log.read_text().splitlines()
    ]
    assert any("SIGUSR1 received, checkpoint written" in line for line in logs)
    assert same_parameters(ckpt / "final.pt", reference)


# ---------------------------------------------------------------------------- fencing

WAIT_FOR_GO = (
    "import os, pathlib, sys, time\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "(out / ('pid-' + os.environ['RANK'])).write_text(str(os.getpid()))\n"
    "while not (out / 'go').exists():\n"
    "    time.sleep(0.05)\n"
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_agents_cut_off_from_every_scheduler_fence_their_ranks(cluster: LocalCluster) -> None:
    out = cluster.root / "fence"
    out.mkdir()
    job_id = cluster.submit(
        {"name": "long", "gpus": 4, "command": [sys.executable, "-c", WAIT_FOR_GO, str(out)]},
    )
    cluster.wait_job(job_id, {JobState.RUNNING})
    pids = wait_until(
        lambda: (
            [int(p.read_text()) for p in out.glob("pid-*")]
            if len(list(out.glob("pid-*"))) == 4
            else None
        ),
        "four ranks running",
    )
    # The scheduler is partitioned away (paused): no agent hears from it any more.
    cluster.scheduler.popen.send_signal(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        wait_until(lambda: not any(_alive(pid) for pid in pids), "ranks fenced", 60)
        fenced_after = time.monotonic() - paused
    finally:
        cluster.scheduler.popen.send_signal(signal.SIGCONT)
    assert fenced_after >= 2.0  # the fence time set above
    fenced = [
        host
        for host in HOSTS
        if any("fenced: no word from any scheduler" in line for line in _log_lines(cluster, host))
    ]
    assert len(fenced) == 2  # the job's two hosts; the idle ones had nothing to stop
    (out / "go").touch()
    job = cluster.wait_job(
        job_id,
        {
            JobState.REQUEUED,
            JobState.FAILED,
            JobState.ADMITTED,
            JobState.STARTING,
            JobState.RUNNING,
            JobState.SUCCEEDED,
        },
    )
    assert job.state is not JobState.SUCCEEDED or job.restarts > 0


def _log_lines(cluster: LocalCluster, host: str) -> list[str]:
    return [
        line
        for log in cluster.root.glob(f"agent-{host}-*.log")
        for line in log.read_text(errors="replace").splitlines()
    ]
