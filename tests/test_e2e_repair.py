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

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.harness.procs import BIN, Proc, children_of, wait_until
from scheduler.client import FirsthopClient, JobState, JobView
from scheduler.jobspec import job_spec_from_data
from topology.generators import fat_tree
from topology.spec import dump_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "examples" / "train_ddp_checkpoint.py"
HOSTS = ("h0001", "h0002", "h0003", "h0004")
SPARE = "h0004"
LOCATION = "pod00-leaf00,pod00"
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


@dataclass
class Cluster:
    root: Path
    address: str
    scheduler: Proc
    agents: dict[str, Proc] = field(default_factory=dict)

    def client(self) -> FirsthopClient:
        return FirsthopClient(self.address)

    def log_dir(self, host: str) -> Path:
        return self.root / f"logs-{host}"

    def start_agent(self, host: str) -> Proc:
        argv = [
            str(BIN / "firsthop-agent"),
            "run",
            "--server",
            self.address,
            "--host",
            host,
            "--address",
            "127.0.0.1",
            "--location",
            LOCATION,
            "--fake-gpus",
            "2",
            "--checkpoint-path",
            str(self.root),
            "--log-dir",
            str(self.log_dir(host)),
            "--stop-grace",
            "3",
            "--max-backoff",
            "0.3",
        ]
        proc = Proc(argv, self.root / f"agent-{host}-{len(self.agents)}.log")
        self.agents[host] = proc
        return proc


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh scheduler (SQLite) and four agents per test: a killed host stays dead."""
    topology = tmp_path / "cluster.yaml"
    dump_spec(fat_tree(1, 1, len(HOSTS), gpus_per_host=2), topology)
    argv = [
        str(BIN / "firsthop-scheduler"),
        "--listen",
        "127.0.0.1:0",
        "--db",
        f"sqlite:///{tmp_path / 'firsthop.db'}",
        "--topology",
        str(topology),
        "--log-level",
        "WARNING",
    ]
    scheduler = Proc(argv, tmp_path / "scheduler.log", SERVER_ENV)
    c = Cluster(tmp_path, "", scheduler)
    try:
        c.address = scheduler.wait_line("listening on ").split()[-1]
        for host in HOSTS:
            c.start_agent(host)
        for host, proc in c.agents.items():
            proc.wait_line(f"agent {host} connected")
        with c.client() as client:
            (spare,) = client.set_node_spare([SPARE], spare=True)
        assert spare.spare
        yield c
    finally:
        for proc in c.agents.values():
            proc.stop()
        scheduler.stop()


def _train_argv(step_time: float) -> list[str]:
    return [
        sys.executable,
        str(TRAIN),
        "--steps",
        str(STEPS),
        "--checkpoint-every",
        str(CHECKPOINT_EVERY),
        "--step-time",
        str(step_time),
    ]


def _reference_run(root: Path) -> tuple[list[Proc], Path]:
    """The same training as plain local processes (undisturbed), beside the job."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ckpt = root / "reference"
    procs = []
    for rank in range(WORLD):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank % 2),
            "WORLD_SIZE": str(WORLD),
            "LOCAL_WORLD_SIZE": "2",
            "NODE_RANK": str(rank // 2),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "FIRSTHOP_CHECKPOINT_DIR": str(ckpt),
            "FIRSTHOP_RESTART_COUNT": "0",
        }
        procs.append(Proc(_train_argv(0.0), root / f"reference-{rank}.log", env))
    return procs, ckpt / "final.pt"


def _job(cluster: Cluster, job_id: str) -> JobView:
    with cluster.client() as client:
        return client.get_job(job_id)


def _wait_job(cluster: Cluster, job_id: str, states: set[JobState]) -> JobView:
    def reached() -> JobView | None:
        job = _job(cluster, job_id)
        return job if job.state in states else None

    return wait_until(reached, f"job {job_id} in {sorted(states)}", JOB_WAIT_S)


def _submit(cluster: Cluster, data: dict[str, object]) -> str:
    with cluster.client() as client:
        job, _ = client.submit_job(job_spec_from_data(data))
    return job.id


def _checkpointed(cluster: Cluster, job_id: str) -> JobView:
    def seen() -> JobView | None:
        job = _job(cluster, job_id)
        return job if job.last_checkpoint_at is not None else None

    return wait_until(seen, f"a checkpoint of {job_id}", JOB_WAIT_S)


def _same_parameters(got_path: Path, want_path: Path) -> None:
    import torch

    want = torch.load(want_path, weights_only=True)
    got = torch.load(got_path, weights_only=True)
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[name], want[name]) for name in want)


def _finish_reference(procs: list[Proc]) -> list[int | None]:
    return [p.stop(0) for p in procs]  # signal 0: only wait for the exit


def test_a_killed_host_is_swapped_for_the_spare_in_place(cluster: Cluster) -> None:
    reference_ranks, reference = _reference_run(cluster.root)
    try:
        ckpt = cluster.root / "ckpt"
        job_id = _submit(
            cluster,
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
        agent = cluster.agents[victim]
        ranks = children_of(agent.pid)
        agent.popen.send_signal(signal.SIGKILL)
        for pid in ranks:
            os.killpg(pid, signal.SIGKILL)
        assert agent.stop(signal.SIGKILL) == -signal.SIGKILL

        done = _wait_job(cluster, job_id, {JobState.SUCCEEDED, JobState.FAILED})
        codes = _finish_reference(reference_ranks)
    finally:
        _finish_reference(reference_ranks)  # closes their logs even when they exited

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
    _same_parameters(ckpt / "final.pt", reference)


def test_a_graceful_preemption_checkpoints_and_loses_no_work(cluster: Cluster) -> None:
    reference_ranks, reference = _reference_run(cluster.root)
    try:
        ckpt = cluster.root / "ckpt"
        victim = _submit(
            cluster,
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
        urgent = _submit(
            cluster,
            {"name": "urgent", "gpus": 2, "priority": 10, "command": [sys.executable, "-c", ""]},
        )
        _wait_job(cluster, urgent, {JobState.SUCCEEDED})
        done = _wait_job(cluster, victim, {JobState.SUCCEEDED, JobState.FAILED})
        codes = _finish_reference(reference_ranks)
    finally:
        _finish_reference(reference_ranks)  # closes their logs even when they exited

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
    _same_parameters(ckpt / "final.pt", reference)


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


def test_agents_cut_off_from_every_scheduler_fence_their_ranks(cluster: Cluster) -> None:
    out = cluster.root / "fence"
    out.mkdir()
    job_id = _submit(
        cluster,
        {"name": "long", "gpus": 4, "command": [sys.executable, "-c", WAIT_FOR_GO, str(out)]},
    )
    _wait_job(cluster, job_id, {JobState.RUNNING})
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
    job = _wait_job(
        cluster,
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


def _log_lines(cluster: Cluster, host: str) -> list[str]:
    return [
        line
        for log in cluster.root.glob(f"agent-{host}-*.log")
        for line in log.read_text(errors="replace").splitlines()
    ]
