"""Rolling-maintenance benchmark: a campaign over a whole simulated fleet, against a blind drain.

The scheduling core itself (:class:`~scheduler.core.scheduler.Scheduler`) runs on simulated
time; simulated agents answer its commands: ranks start at once, report a checkpoint every
hour, and exit when their job's work is done; a maintenance action takes ``ACTION_S`` and the
health check ``CHECK_S``. The fleet: a 4 pods x 16 leaves x 16 hosts x 8 GPUs fat tree (1,024
hosts). Long multi-host jobs (2 to 32 hosts, 12 to 72 h of work, checkpoint every hour, drawn
from a seeded generator) fill 80 % of the hosts, each at a random point of its life (5 to 100 %
of its work left); each job that ends is replaced by a new one from the same stream, so the
load stays near 80 %.

Runs on the same job stream, same budget (5 % of the fleet, 51 hosts out at a time):

- **firsthop, wait**: ``maintenance start all --max-unavailable 5% --busy wait`` (the core's
  campaign machine and wave planner: idle hosts and whole idle leaves first, a job's hosts in
  one wave, busy hosts drained and waited for, never stopped);
- **firsthop, migrate**: the same with ``--busy migrate``: the jobs on a wave's hosts are asked
  for a checkpoint (the simulated program saves its progress in ``SAVE_S`` and exits cleanly),
  only their ranks on those hosts move (the core's partial re-placement) and they restart at
  once from that checkpoint;
- **baseline**: hosts in name order, as many as the budget allows, each taken at once and the
  jobs on it killed (requeued from their last checkpoint, as an eviction does), returned after
  the same action and check.

A third run isolates what the planner's order is worth: hosts in name order, drained and
waited for (lossless, like ``--busy wait``, but blind to jobs and leaves).

Reported per run: wall time of the campaign in simulated hours, peak capacity out (hosts not
in service), GPU-hours of work lost (time since the last checkpoint of every killed job,
times its GPUs, as the core records it), jobs disturbed (stopped, moved or waited for), moves
(a job moved off three hosts in three waves counts three), and the mean GPU utilisation
during the campaign.

The stream's jobs have no time limit, so while the ``--busy wait`` campaign runs they may not
start on the hosts it has not reached yet (the core's maintenance hold,
:mod:`scheduler.core.maintenance_hold`): they go to hosts it is done with. The name-order
runs drain hosts directly, with no campaign, so nothing holds hosts ahead of them.

Not modelled: a restart's start-up time (rendezvous, loading the checkpoint) beyond
``SAVE_S``.

Run: ``python -m bench.maintenance [--pods 4 --leaves 16 --hosts 16] [--seed 1]``; writes
``bench/results/maintenance.json``.
"""

from __future__ import annotations

import argparse
import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from bench.common import write_results
from scheduler.core.actions import (
    Action,
    NotifyJobChanged,
    RunMaintenance,
    StartRanks,
    StopRanks,
)
from scheduler.core.campaign_records import TERMINAL_CAMPAIGN_STATES, BusyPolicy, CampaignSpec
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import (
    CampaignStartRequested,
    CheckpointReported,
    Event,
    HeartbeatReceived,
    JobSubmitted,
    MaintenanceReported,
    NodeDrainRequested,
    NodeRegistered,
    NodeResumeRequested,
    RankExited,
    RanksStarted,
    RanksStopped,
    SchedulerStarted,
    StartAcknowledged,
    TimerFired,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import Health, JobState, NodeState
from scheduler.jobspec import job_spec_from_data
from topology.generators import fat_tree
from topology.model import Topology

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TICK_S = 300.0
ACTION_S = 20 * 60.0
CHECK_S = 60.0
CHECKPOINT_S = 3600.0
SAVE_S = 120.0
"""Seconds a simulated program takes to write the checkpoint it was asked for."""
CHECKPOINT_SIGNAL = "SIGUSR1"
UTILISATION = 0.80
BUDGET = "5%"
MAX_DAYS = 30
JOB_HOSTS = (2, 4, 8, 16, 32)
WORK_H = (12.0, 72.0)
GPUS = 8


@dataclass
class _Run:
    """One job's simulated progress."""

    work_s: float
    saved_s: float = 0.0
    attempt: int = -1
    started: datetime | None = None
    base_s: float = 0.0
    """Work saved when the current attempt started."""
    asked: int = -1
    """The attempt last asked to checkpoint."""


@dataclass
class Sim:
    """The core on simulated time, with simulated agents (see the module docstring)."""

    topology: Topology
    seed: int
    core: Scheduler = field(init=False)
    now: datetime = T0
    queue: list[tuple[datetime, int, Callable[[], None]]] = field(default_factory=list)
    seq: int = 0
    runs: dict[str, _Run] = field(default_factory=dict)
    jobs_submitted: int = 0
    peak_out: int = 0
    busy_gpu_s: float = 0.0
    events: int = 0

    def __post_init__(self) -> None:
        config = SchedulerConfig(heartbeat_timeout_s=1e9, start_timeout_s=1e9, stop_grace_s=30.0)
        self.core = Scheduler(self.topology.index, config)
        self.rng = random.Random(self.seed)
        self.handle(SchedulerStarted(self.now))
        for name in self.topology.index.host_names:
            self.handle(NodeRegistered(self.now, name, GPUS, "sim"))
            self.handle(HeartbeatReceived(self.now, name, Health.HEALTHY))

    # ------------------------------------------------------------------ events

    def later(self, delay_s: float, fn: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + timedelta(seconds=delay_s), self.seq, fn))

    def handle(self, event: Event) -> None:
        self.events += 1
        for action in self.core.handle(event):
            self._act(action)

    def _act(self, action: Action) -> None:
        if isinstance(action, StartRanks):
            a = action
            self.later(
                0, lambda: self.handle(StartAcknowledged(self.now, a.job_id, a.node, a.attempt))
            )
            self.later(0, lambda: self.handle(RanksStarted(self.now, a.job_id, a.node, a.attempt)))
        elif isinstance(action, StopRanks):
            s = action
            if s.signal == CHECKPOINT_SIGNAL and s.grace_s > 0:
                self._asked(s)
            else:
                self.later(
                    0, lambda: self.handle(RanksStopped(self.now, s.job_id, s.node, s.attempt))
                )
        elif isinstance(action, RunMaintenance):
            m = action
            took = ACTION_S if m.step == "action" else CHECK_S
            self.later(
                took,
                lambda: self.handle(
                    MaintenanceReported(self.now, m.campaign, m.node, m.attempt, m.step, True)
                ),
            )
        elif isinstance(action, NotifyJobChanged):
            self._job_changed(action)

    def _job_changed(self, action: NotifyJobChanged) -> None:
        job = action.job
        run = self.runs[job.id]
        if job.state is JobState.RUNNING and job.started_at is not None:
            if run.attempt == job.restarts:
                return
            run.attempt, run.started, run.base_s = job.restarts, self.now, run.saved_s
            attempt = job.restarts
            left = run.work_s - run.saved_s
            for k in range(1, int(left // CHECKPOINT_S) + 1):
                self.later(k * CHECKPOINT_S, partial(self._checkpoint, job.id, attempt))
            self.later(left, partial(self._finish, job.id, attempt))
        elif job.state is JobState.SUCCEEDED and run.attempt >= 0:
            run.attempt = -2
            self.submit()

    def _asked(self, stop: StopRanks) -> None:
        """A checkpoint request: the program saves its progress in ``SAVE_S``, reports the
        checkpoint, and every rank exits 0."""
        run = self.runs[stop.job_id]
        if run.attempt == stop.attempt and run.asked != stop.attempt and run.started is not None:
            run.asked = stop.attempt
            done = run.base_s + (self.now - run.started).total_seconds()
            run.saved_s = min(run.work_s, max(run.saved_s, done))
            attempt = stop.attempt
            self.later(
                SAVE_S,
                lambda: self.handle(CheckpointReported(self.now, stop.job_id, attempt)),
            )
        self.later(
            SAVE_S,
            lambda: self.handle(
                RanksStopped(self.now, stop.job_id, stop.node, stop.attempt, clean=True)
            ),
        )

    def _checkpoint(self, job_id: str, attempt: int) -> None:
        run = self.runs[job_id]
        if run.attempt != attempt or self.core.state.jobs[job_id].state is not JobState.RUNNING:
            return
        run.saved_s += CHECKPOINT_S
        self.handle(CheckpointReported(self.now, job_id, attempt))

    def _finish(self, job_id: str, attempt: int) -> None:
        job = self.core.state.jobs[job_id]
        if self.runs[job_id].attempt != attempt or job.allocation is None:
            return
        for slot in job.allocation.ranks:
            self.handle(RankExited(self.now, job_id, slot.host, attempt, slot.rank, 0))

    def submit(self, *, aged: bool = False) -> str:
        """Submit the next job of the stream; ``aged``: one already part-way through its work
        (the jobs running when the campaign starts, at a random point of their lives)."""
        hosts = self.rng.choice(JOB_HOSTS)
        work_s = self.rng.uniform(*WORK_H) * 3600
        if aged:
            work_s *= self.rng.uniform(0.05, 1.0)
        self.jobs_submitted += 1
        job_id = f"j{self.jobs_submitted:05d}"
        spec = job_spec_from_data(
            {
                "name": "train",
                "gpus": hosts * GPUS,
                "max_restarts": 10_000,
                "checkpoint": {
                    "dir": "/ckpt",
                    "interval_s": int(CHECKPOINT_S),
                    "signal": CHECKPOINT_SIGNAL,
                    "grace_s": 600,
                },
            }
        )
        self.runs[job_id] = _Run(work_s)
        self.handle(JobSubmitted(self.now, job_id, spec, "sim"))
        return job_id

    # ------------------------------------------------------------------ time

    def step(self, until: datetime) -> None:
        """Run every scheduled event up to ``until``, then tick there."""
        while self.queue and self.queue[0][0] <= until:
            at, _, fn = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            fn()
        self.now = until
        self.handle(TimerFired(self.now))

    def out_of_service(self) -> int:
        return sum(1 for n in self.core.state.nodes.values() if n.state is not NodeState.READY)

    def busy_gpus(self) -> int:
        return int(self.core.state.busy.sum())

    def fill(self) -> None:
        """Submit jobs until 80 % of the hosts are busy, and let them start."""
        target = UTILISATION * self.topology.index.num_gpus
        while self.busy_gpus() < target:
            job_id = self.submit(aged=True)
            self.step(self.now + timedelta(seconds=1))
            if self.core.state.jobs[job_id].allocation is None:
                break  # the cluster is as full as this stream fills it; that job waits
        for _ in range(5):
            self.step(self.now + timedelta(seconds=TICK_S))

    def sample(self, dt: float) -> None:
        self.peak_out = max(self.peak_out, self.out_of_service())
        self.busy_gpu_s += self.busy_gpus() * dt


def _lost(sim: Sim, since: datetime) -> tuple[float, int]:
    """GPU-hours lost to interruptions after ``since``, and jobs interrupted."""
    lost, disturbed = 0.0, 0
    for job in sim.core.state.jobs.values():
        hit = [f for f in job.failures if f.at >= since]
        if hit:
            disturbed += 1
            lost += sum(f.lost_s for f in hit) * job.gpus / 3600
    return lost, disturbed


def _interrupted(sim: Sim, since: datetime) -> set[str]:
    """Jobs stopped at least once after ``since`` (moves included)."""
    return {
        job.id for job in sim.core.state.jobs.values() if any(f.at >= since for f in job.failures)
    }


def run_firsthop(
    topology: Topology, seed: int, busy: BusyPolicy = BusyPolicy.WAIT
) -> dict[str, Any]:
    """The campaign machine with a 5 % budget, ``--busy wait`` or ``--busy migrate``."""
    sim = Sim(topology, seed)
    sim.fill()
    start = sim.now
    utilisation_at_start = sim.busy_gpus() / topology.index.num_gpus
    spec = CampaignSpec(
        name="fleet", selector="all", max_unavailable=BUDGET, busy=busy, command=("up",)
    )
    sim.handle(CampaignStartRequested(sim.now, spec))
    wall = time.perf_counter()
    deadline = start + timedelta(days=MAX_DAYS)
    campaign = sim.core.campaigns.all["fleet"]
    while campaign.state not in TERMINAL_CAMPAIGN_STATES and sim.now < deadline:
        sim.step(sim.now + timedelta(seconds=TICK_S))
        sim.sample(TICK_S)
        campaign = sim.core.campaigns.all["fleet"]
    lost, stopped = _lost(sim, start)
    hours = (sim.now - start).total_seconds() / 3600
    return {
        "finished": campaign.state.value == "SUCCEEDED",
        "wall_time_sim_h": round(hours, 2),
        "peak_capacity_out_hosts": sim.peak_out,
        "gpu_hours_lost": round(lost, 1),
        "jobs_stopped": stopped,
        "jobs_moved": len(campaign.jobs_moved),
        "moves": sum(
            1
            for job in sim.core.state.jobs.values()
            for f in job.failures
            if f.at >= start and f.message.startswith("moved for maintenance campaign")
        ),
        "jobs_waited": len(campaign.jobs_waited),
        "jobs_disturbed": len(_interrupted(sim, start) | set(campaign.jobs_waited)),
        "campaign_gpu_hours_lost": round(campaign.gpu_hours_lost, 1),
        "utilisation_at_start": round(utilisation_at_start, 3),
        "mean_utilisation_during": round(
            sim.busy_gpu_s / (topology.index.num_gpus * max(1.0, hours * 3600)), 3
        ),
        "core_events": sim.events,
        "run_s": round(time.perf_counter() - wall, 1),
    }


def run_baseline(topology: Topology, seed: int, *, kill: bool = True) -> dict[str, Any]:
    """Hosts in name order within the budget, taken at once and their jobs killed (``kill``),
    or drained and waited for (the lossless naive order, to isolate what the planner's order
    is worth)."""
    sim = Sim(topology, seed)
    sim.fill()
    start = sim.now
    utilisation_at_start = sim.busy_gpus() / topology.index.num_gpus
    budget = max(1, int(len(topology.index.host_names) * 5 // 100))
    todo = sorted(topology.index.host_names)
    out: set[str] = set()
    done = 0
    wall = time.perf_counter()
    deadline = start + timedelta(days=MAX_DAYS)

    def back(host: str) -> None:
        nonlocal done
        sim.handle(HeartbeatReceived(sim.now, host, Health.HEALTHY))
        sim.handle(NodeResumeRequested(sim.now, host, "maintenance done"))
        out.discard(host)
        done += 1

    total = len(todo)
    draining: set[str] = set()
    waited: set[str] = set()
    while done < total and sim.now < deadline:
        while todo and len(out) < budget:
            host = todo.pop(0)
            out.add(host)
            if kill:
                # A failed verdict drains the host and sends its jobs down the failure path:
                # requeued from their last checkpoint, as an eviction does.
                sim.handle(HeartbeatReceived(sim.now, host, Health.FAILED, detail="maintenance"))
                sim.later(ACTION_S + CHECK_S, partial(back, host))
            else:
                waited.update(sim.core.state.host_jobs.get(host, ()))
                sim.handle(NodeDrainRequested(sim.now, host, "maintenance"))
                draining.add(host)
        for host in sorted(draining):
            if sim.core.state.nodes[host].state is NodeState.DRAINED:
                draining.discard(host)
                sim.later(ACTION_S + CHECK_S, partial(back, host))
        sim.step(sim.now + timedelta(seconds=TICK_S))
        sim.sample(TICK_S)
    lost, disturbed = _lost(sim, start)
    hours = (sim.now - start).total_seconds() / 3600
    return {
        "finished": done == total,
        "wall_time_sim_h": round(hours, 2),
        "peak_capacity_out_hosts": sim.peak_out,
        "gpu_hours_lost": round(lost, 1),
        "jobs_stopped": disturbed,
        "jobs_waited": len(waited),
        "jobs_disturbed": disturbed + len(waited),
        "utilisation_at_start": round(utilisation_at_start, 3),
        "mean_utilisation_during": round(
            sim.busy_gpu_s / (topology.index.num_gpus * max(1.0, hours * 3600)), 3
        ),
        "core_events": sim.events,
        "run_s": round(time.perf_counter() - wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Run both and write ``bench/results/maintenance.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--leaves", type=int, default=16)
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    topology = Topology.from_spec(fat_tree(args.pods, args.leaves, args.hosts, gpus_per_host=GPUS))
    hosts = len(topology.index.host_names)
    print(f"fleet: {hosts} hosts x {GPUS} GPUs, budget {BUDGET}", flush=True)
    firsthop = run_firsthop(topology, args.seed)
    print("firsthop, wait:", firsthop, flush=True)
    migrate = run_firsthop(topology, args.seed, BusyPolicy.MIGRATE)
    print("firsthop, migrate:", migrate, flush=True)
    baseline = run_baseline(topology, args.seed)
    print("baseline:", baseline, flush=True)
    naive_wait = run_baseline(topology, args.seed, kill=False)
    print("name order, waiting:", naive_wait, flush=True)
    payload = {
        "fleet_hosts": hosts,
        "gpus_per_host": GPUS,
        "budget": BUDGET,
        "utilisation_target": UTILISATION,
        "action_s": ACTION_S,
        "check_s": CHECK_S,
        "checkpoint_interval_s": CHECKPOINT_S,
        "job_hosts": JOB_HOSTS,
        "job_work_h": WORK_H,
        "save_s": SAVE_S,
        "seed": args.seed,
        "firsthop_busy_wait": firsthop,
        "firsthop_busy_migrate": migrate,
        "baseline_name_order_kill": baseline,
        "name_order_wait": naive_wait,
        "ratios": {
            "wall_time": round(
                firsthop["wall_time_sim_h"] / max(1e-9, baseline["wall_time_sim_h"]), 2
            ),
            "gpu_hours_lost": (
                round(firsthop["gpu_hours_lost"] / baseline["gpu_hours_lost"], 3)
                if baseline["gpu_hours_lost"]
                else None
            ),
            "migrate_wall_time": round(
                migrate["wall_time_sim_h"] / max(1e-9, baseline["wall_time_sim_h"]), 2
            ),
            "migrate_gpu_hours_lost": (
                round(migrate["gpu_hours_lost"] / baseline["gpu_hours_lost"], 3)
                if baseline["gpu_hours_lost"]
                else None
            ),
            "migrate_vs_wait_wall_time": round(
                migrate["wall_time_sim_h"] / max(1e-9, firsthop["wall_time_sim_h"]), 3
            ),
        },
    }
    path = write_results("maintenance", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
