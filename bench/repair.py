"""In-place repair vs through the queue: a 512-host job loses one host on a busy cluster.

The scheduling core alone (no processes), driven as a runtime would drive it, on 1,024
simulated hosts of 8 GPUs (a fat tree of 4 pods x 16 leaves x 16 hosts) at 80 % utilisation:
a 512-host job (4,096 GPUs, checkpointing), 307 hosts of 2-host jobs, and a backlog of
256-host jobs waiting in the queue (too big for the 205 free hosts). One of the big job's
hosts reports a FAILED verdict; the surviving hosts report their ranks stopped ``STOP_S``
later; every start command's ranks report running ``LAUNCH_S`` after it was sent; the
scheduler ticks every ``TICK_S``. Both paths see the same simulated agents; only the core's
decision differs:

- **in place** (``repair_in_place``): the job keeps its 511 healthy hosts and swaps one;
- **queue** (the baseline, measured in the same run): the job is requeued and placed again
  by the scheduling cycle, competing with the backlog.

Reported per path: simulated seconds from the failure to all ranks running again, wall-clock
seconds the core spent handling the events of that recovery (placer included), hosts whose
ranks moved, and ranks moved. Simulated times depend on ``STOP_S``/``LAUNCH_S``/``TICK_S``
(stated in the result); the decision times and hosts moved are measured.

A second scenario, **domain**, measures preempting in the failed host's domain: a 128-host
job of priority 5 (one pod's worth of leaves) and 2-host checkpointing jobs of priority 0 fill
its pod, with the free hosts (10 % of the cluster) in other pods. One of its hosts fails; the
free replacement lies in another pod, so its data-parallel ring would cross the cluster tier.
Baseline (same run): ``repair_preempt_above`` off, the repair takes that free host. With it on,
the repair preempts one small job in the pod (its simulated agents checkpoint and exit
``STOP_S`` after the signal) and takes its host. Reported: modelled cost per step before the
failure and after the repair, time back to running, victims and their lost work.

Run: ``python -m bench.repair``; writes ``bench/results/repair.json``.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from typing import Any

from bench.common import write_results
from placement import PlacementParams
from scheduler.core.actions import StartRanks, StopRanks
from scheduler.core.clock import ManualClock
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import (
    CheckpointReported,
    Event,
    HeartbeatReceived,
    JobSubmitted,
    NodeRegistered,
    RanksStarted,
    RanksStopped,
    StartAcknowledged,
    TimerFired,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import Health, JobState
from scheduler.jobspec import job_spec_from_data
from topology.generators import fat_tree
from topology.model import Topology

PODS, LEAVES, HOSTS_PER_LEAF, GPUS = 4, 16, 16, 8
BIG_HOSTS = 512
UTILISATION = 0.80
SMALL_HOSTS = 2
BACKLOG = 4
BACKLOG_HOSTS = 256
STOP_S = 2.0
LAUNCH_S = 10.0
TICK_S = 1.0
HEARTBEAT_S = 5.0


class Sim:
    """The core plus simulated agents: start commands report running ``LAUNCH_S`` later."""

    def __init__(
        self,
        topology: Topology,
        *,
        in_place: bool,
        preempt_above: float | None = 1.10,
        auto_stop: bool = False,
    ) -> None:
        config = SchedulerConfig(
            repair_in_place=in_place,
            repair_preempt_above=preempt_above,
            max_placement_seconds_per_cycle=None,
            placement=PlacementParams(time_limit_s=2.0),
        )
        self.clock = ManualClock()
        self.core = Scheduler(topology.index, config)
        self.pending_starts: list[tuple[datetime, StartRanks]] = []
        self.auto_stop = auto_stop
        """Simulated agents stop ranks ``STOP_S`` after a stop command (a graceful stop after
        saving a checkpoint); otherwise the scenario reports stops itself."""
        self.pending_stops: list[tuple[datetime, StopRanks]] = []
        self.handle_s = 0.0
        self.seq = 0
        self.hosts = topology.index.host_names
        self.next_beat = self.clock.now()

    def handle(self, event: Event) -> None:
        began = time.perf_counter()
        actions = self.core.handle(event)
        self.handle_s += time.perf_counter() - began
        due = self.clock.now() + timedelta(seconds=LAUNCH_S)
        self.pending_starts += [(due, a) for a in actions if isinstance(a, StartRanks)]
        if self.auto_stop:
            due = self.clock.now() + timedelta(seconds=STOP_S)
            self.pending_stops += [(due, a) for a in actions if isinstance(a, StopRanks)]

    def beat(self) -> None:
        """Every host heartbeats (not counted in the core's handling time: it is the same
        for both paths and not part of the recovery)."""
        now = self.clock.now()
        for name, node in self.core.state.nodes.items():
            if node.health is not Health.FAILED:
                self.core.handle(HeartbeatReceived(now, name, node.health))

    def advance(self, seconds: float) -> None:
        """Let time pass tick by tick, delivering due rank starts and heartbeats."""
        end = self.clock.now() + timedelta(seconds=seconds)
        while self.clock.now() < end:
            self.clock.advance(TICK_S)
            now = self.clock.now()
            if now >= self.next_beat:
                self.beat()
                self.next_beat = now + timedelta(seconds=HEARTBEAT_S)
            due = [s for at, s in self.pending_starts if at <= now]
            self.pending_starts = [(at, s) for at, s in self.pending_starts if at > now]
            for start in due:
                self.handle(StartAcknowledged(now, start.job_id, start.node, start.attempt))
                self.handle(RanksStarted(now, start.job_id, start.node, start.attempt))
            stops = [s for at, s in self.pending_stops if at <= now]
            self.pending_stops = [(at, s) for at, s in self.pending_stops if at > now]
            for stop in stops:
                self.deliver_stop(stop)
            self.handle(TimerFired(now))

    def deliver_stop(self, stop: StopRanks) -> None:
        """The ranks are gone; a job asked to checkpoint saved first (graceful stop)."""
        now = self.clock.now()
        job = self.core.state.jobs[stop.job_id]
        graceful = job.checkpoint_requested_at is not None and job.restarts == stop.attempt
        if graceful:
            self.handle(CheckpointReported(now, stop.job_id, stop.attempt))
        self.handle(RanksStopped(now, stop.job_id, stop.node, stop.attempt, clean=graceful))

    def submit(self, hosts: int, **fields: Any) -> str:
        self.seq += 1
        job_id = f"j{self.seq:05d}"
        spec = job_spec_from_data({"name": "job", "gpus": hosts * GPUS, **fields})
        self.handle(JobSubmitted(self.clock.now(), job_id, spec, "bench"))
        return job_id


def run_path(*, in_place: bool) -> dict[str, Any]:
    topology = Topology.from_spec(fat_tree(PODS, LEAVES, HOSTS_PER_LEAF, gpus_per_host=GPUS))
    sim = Sim(topology, in_place=in_place)
    now = sim.clock.now()
    for host in sim.hosts:
        sim.handle(NodeRegistered(now, host, GPUS, "bench"))
        sim.handle(HeartbeatReceived(now, host, Health.HEALTHY))
    ckpt = {"dir": "/ckpt", "interval_s": 600}
    big = sim.submit(BIG_HOSTS, max_restarts=3, checkpoint=ckpt)
    sim.advance(TICK_S)
    busy_hosts = round(UTILISATION * len(sim.hosts))
    for _ in range((busy_hosts - BIG_HOSTS) // SMALL_HOSTS):
        sim.submit(SMALL_HOSTS, time_limit_s=24 * 3600)
    sim.advance(LAUNCH_S + 2 * TICK_S)
    for _ in range(BACKLOG):  # too big for the free hosts: they wait in the queue
        sim.submit(BACKLOG_HOSTS, time_limit_s=24 * 3600)
    sim.advance(LAUNCH_S + 2 * TICK_S)
    state = sim.core.state
    job = state.jobs[big]
    assert job.state is JobState.RUNNING
    assert job.allocation is not None
    used = sum(1 for n in sim.hosts if state.host_jobs.get(n))
    before = {s.rank: (s.host, s.gpu) for s in job.allocation.ranks}
    old_hosts = set(job.allocation.hosts)
    failed = job.allocation.hosts[BIG_HOSTS // 3]
    sim.handle_s = 0.0
    failed_at = sim.clock.now()
    sim.handle(HeartbeatReceived(failed_at, failed, Health.FAILED, {big: 0}, "bench: ecc"))
    sim.clock.advance(STOP_S)
    for host in sorted(old_hosts - {failed}):
        sim.handle(RanksStopped(sim.clock.now(), big, host, 0, clean=False))
    waited = 0.0
    while state.jobs[big].state is not JobState.RUNNING and waited < 3600:
        sim.advance(TICK_S)
        waited += TICK_S
    job = state.jobs[big]
    assert job.state is JobState.RUNNING, job.state
    assert job.allocation is not None
    after = {s.rank: (s.host, s.gpu) for s in job.allocation.ranks}
    assert job.started_at is not None
    return {
        "path": "in_place" if in_place else "queue",
        "utilisation": used / len(sim.hosts),
        "failure_to_running_s": (job.started_at - failed_at).total_seconds(),
        "core_handling_s": sim.handle_s,
        "hosts_moved": len(old_hosts - set(job.allocation.hosts)),
        "ranks_moved": sum(1 for r in before if before[r] != after[r]),
        "repairs": [
            {"moves": list(r.moves), "method": r.method, "ranks_moved": r.ranks_moved}
            for r in job.repairs
        ],
    }


DOMAIN_JOB_HOSTS = 128
DOMAIN_UTILISATION = 0.90
"""Busy enough that no pod has room for the whole job (else the placer's full re-placement
into that pod costs what the job cost before, and nothing is worth preempting)."""


def run_domain(*, preempt: bool) -> dict[str, Any]:
    """The **domain** scenario (module docstring)."""
    topology = Topology.from_spec(fat_tree(PODS, LEAVES, HOSTS_PER_LEAF, gpus_per_host=GPUS))
    sim = Sim(topology, in_place=True, preempt_above=1.10 if preempt else None, auto_stop=True)
    now = sim.clock.now()
    for host in sim.hosts:
        sim.handle(NodeRegistered(now, host, GPUS, "bench"))
        sim.handle(HeartbeatReceived(now, host, Health.HEALTHY))
    ckpt = {"dir": "/ckpt", "interval_s": 600}
    big = sim.submit(DOMAIN_JOB_HOSTS, max_restarts=3, checkpoint=ckpt, priority=5)
    sim.advance(TICK_S)
    busy_hosts = round(DOMAIN_UTILISATION * len(sim.hosts))
    for _ in range((busy_hosts - DOMAIN_JOB_HOSTS) // SMALL_HOSTS):
        sim.submit(SMALL_HOSTS, checkpoint=ckpt, time_limit_s=24 * 3600)
    sim.advance(LAUNCH_S + 2 * TICK_S)
    state = sim.core.state
    for job_id, job in sorted(state.jobs.items()):
        if job.state is JobState.RUNNING:
            sim.handle(CheckpointReported(sim.clock.now(), job_id, job.restarts))
    sim.advance(60.0)
    job = state.jobs[big]
    assert job.state is JobState.RUNNING
    assert job.allocation is not None
    index = topology.index
    pods = {int(index.ancestors[index.host_ids[h], 2]) for h in job.allocation.hosts}
    assert len(pods) == 1, "setup: the job fits one pod"
    cost_before = job.allocation.cost
    old_hosts = set(job.allocation.hosts)
    failed = job.allocation.hosts[DOMAIN_JOB_HOSTS // 3]
    sim.handle_s = 0.0
    failed_at = sim.clock.now()
    sim.handle(HeartbeatReceived(failed_at, failed, Health.FAILED, {big: 0}, "bench: ecc"))
    waited = 0.0
    while state.jobs[big].state is not JobState.RUNNING and waited < 3600:
        sim.advance(TICK_S)
        waited += TICK_S
    job = state.jobs[big]
    assert job.state is JobState.RUNNING, job.state
    assert job.allocation is not None
    assert job.started_at is not None
    (repair,) = job.repairs
    victims = [state.jobs[v] for v in repair.victims]
    return {
        "path": "preempt_in_domain" if preempt else "free_host",
        "failure_to_running_s": (job.started_at - failed_at).total_seconds(),
        "core_handling_s": sim.handle_s,
        "cost_before_ms": cost_before,
        "cost_after_ms": job.allocation.cost,
        "cost_ratio": job.allocation.cost / cost_before,
        "hosts_moved": len(old_hosts - set(job.allocation.hosts)),
        "moves": list(repair.moves),
        "same_pod": all(
            int(index.ancestors[index.host_ids[h], 2]) in pods for h in job.allocation.hosts
        ),
        "victims": list(repair.victims),
        "victims_lost_s": sum(v.failures[-1].lost_s for v in victims),
    }


def in_place_vs_queue() -> dict[str, Any]:
    """The 512-host job losing one host, repaired in place and through the queue (the same
    cluster, failure and backlog); also the figures ``bench.recovery`` reports at scale."""
    queue = run_path(in_place=False)
    in_place = run_path(in_place=True)
    return {
        "cluster": {
            "hosts": PODS * LEAVES * HOSTS_PER_LEAF,
            "gpus_per_host": GPUS,
            "big_job_hosts": BIG_HOSTS,
            "backlog_jobs": BACKLOG,
            "backlog_job_hosts": BACKLOG_HOSTS,
        },
        "simulated_agents": {"stop_s": STOP_S, "launch_s": LAUNCH_S, "tick_s": TICK_S},
        "queue": queue,
        "in_place": in_place,
        "speedup_failure_to_running": queue["failure_to_running_s"]
        / in_place["failure_to_running_s"],
    }


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    paths = in_place_vs_queue()
    queue, in_place = paths["queue"], paths["in_place"]
    free_host = run_domain(preempt=False)
    in_domain = run_domain(preempt=True)
    payload = {
        **paths,
        "domain": {
            "job_hosts": DOMAIN_JOB_HOSTS,
            "free_host": free_host,
            "preempt_in_domain": in_domain,
            "cost_after_ratio": in_domain["cost_after_ms"] / free_host["cost_after_ms"],
        },
    }
    path = write_results("repair", payload)
    for row in (queue, in_place):
        print(
            f"{row['path']:>8}: back in {row['failure_to_running_s']:.1f} s simulated, "
            f"core {row['core_handling_s'] * 1000:.0f} ms, hosts moved {row['hosts_moved']}, "
            f"ranks moved {row['ranks_moved']} (utilisation {row['utilisation']:.2f})"
        )
    for row in (free_host, in_domain):
        print(
            f"{row['path']:>17}: cost {row['cost_before_ms']:.1f} -> {row['cost_after_ms']:.1f} "
            f"ms/step, back in {row['failure_to_running_s']:.1f} s simulated, core "
            f"{row['core_handling_s'] * 1000:.0f} ms, victims {len(row['victims'])} "
            f"(lost {row['victims_lost_s']:.0f} s), same pod {row['same_pod']}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
