"""The discrete-event loop: one policy, one run, the production core on a simulated clock.

The engine plays the runtime and the agents. It keeps a heap of timed events and, for each,
feeds the real :class:`~scheduler.core.scheduler.Scheduler` the event a runtime would and
executes the actions it returns:

- ``StartRanks`` -> after ``checkpoint.restart_s`` (start, rendezvous, checkpoint load), a
  ``RanksStarted`` from every host of the attempt; once the core reports the job RUNNING the
  engine schedules its checkpoints (``CheckpointReported``) and its end (a ``RankExited``
  with status 0 from every rank) from :mod:`scheduler.sim.runmodel`;
- ``StopRanks`` -> ``RanksStopped`` after ``stop_s``;
- a hardware or network failure -> a ``HeartbeatReceived`` with health FAILED from each host
  (the core drains it and sends its jobs through its failure path), then after the repair
  time a ``NodeResumeRequested`` and a healthy heartbeat; a software failure -> a
  ``RankExited`` with status 1 from one rank of a job on the host;
- ``TimerFired`` at the next multiple of ``cycle_s`` after anything changed.

Repair is the core's business: the engine reports failures and repairs and executes whatever
stop and start commands come back. With ``repair_in_place`` off the core sends an interrupted
job back through the queue (the failed host excluded until it is back in service); with it on
(and the spare pool marked at the start, ``SimConfig.spares_per_leaf``) the core swaps the
lost hosts' ranks in the same event and its start commands for the new rank table run here
unchanged, so the simulator measures both modes without a line of repair logic of its own.
The engine keeps the pool as an operator would: when a repaired host returns, spares that a
repair gave to a job that is not preemptible leave the pool (they are production hosts now),
and the returned host joins it if its leaf has fewer than ``spares_per_leaf`` spares, so the
pool refills leaf by leaf and does not drift to the leaves whose hosts came back. The
core's ``blame_delay_s`` is 0 here: the simulated failure reports the faulty rank's host
itself, and simulated agents do not heartbeat (a delay would find every host silent).

For every job the engine also keeps where its wall time since its first start went
(:class:`Run`): running, restarting (placed, ranks not all running), stopping (a repair's or
preemption's stop), queued, plus checkpoints taken and the compute they saved; the report
breaks a large job's ETTR down from them.

Given a restored core (``scheduler=``), the engine adopts its jobs: running jobs go on, jobs
being stopped finish stopping, jobs caught starting bring their ranks up. A start-time
forecast (:mod:`scheduler.sim.forecast`) runs that way, told of each admission
(``on_admitted``) and free to end the run from ``before_event`` (any exception it raises).

Persisting, notifications to watchers and heartbeats are not simulated (nodes are never
silent here, so the heartbeat timeout is set beyond the horizon). Nothing is copied from the
core: every decision (admission order, backfill, placement, failure handling, requeueing) is
the core's; the engine only keeps time and job progress.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import cast

import numpy as np

from placement import Placement, PlacementParams, Snapshot
from placement import place as run_placer
from placement.fragmentation import fragmentation
from scheduler.core.actions import Action, NotifyJobChanged, StartRanks, StopRanks
from scheduler.core.capacity import common_gpus_per_host
from scheduler.core.clock import EPOCH
from scheduler.core.config import SchedulerConfig
from scheduler.core.cycle import Placer
from scheduler.core.events import (
    CheckpointReported,
    Event,
    HeartbeatReceived,
    JobSubmitted,
    NodeRegistered,
    NodeResumeRequested,
    NodeSpareSet,
    RankExited,
    RanksStarted,
    RanksStopped,
    SchedulerStarted,
    TimerFired,
)
from scheduler.core.records import Job
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import Health, JobState, NodeState, is_terminal
from scheduler.sim.config import SimConfig
from scheduler.sim.costing import rank_cost
from scheduler.sim.failures import FailureEvent, FailureKind
from scheduler.sim.runmodel import checkpoint_interval_s, slowdown
from scheduler.sim.workload import SimJob
from topology.errors import FirsthopError
from topology.index import TopologyIndex

STRANDED_LEAF_HOSTS = 4
NEVER_S = 1e9
"""A heartbeat timeout beyond any horizon (the simulated agents are never silent)."""


class Kind(IntEnum):
    """Event kinds, in the order they run when they fall on the same instant."""

    REPAIR = 0
    FAIL = 1
    STOPPED = 2
    UP = 3
    CHECKPOINT = 4
    DONE = 5
    SUBMIT = 6
    TICK = 7
    SAMPLE = 8


@dataclass
class Run:
    """Progress of a job across its attempts (the engine's side; the core keeps its own)."""

    job: SimJob
    saved_s: float = 0.0
    """Work (ideal-placement seconds) saved by the latest checkpoint."""
    attempt: int = -1
    rate: float = 1.0
    """Work seconds per wall second at the current placement (1 / slowdown)."""
    interval_s: float = math.inf
    segment_start: float = 0.0
    placements: list[tuple[float, float, float]] = field(default_factory=list)
    """(cost ms, ideal ms, cross-tier GB) of every attempt that ran."""
    first_running_s: float | None = None
    phase: str | None = None
    """Where the job's time goes now (``PHASES``); ``None`` before its first start."""
    phase_since: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds since the first start per phase."""
    checkpoints: int = 0
    useful_s: float = 0.0
    """Wall seconds of computation saved by checkpoints (or a successful end)."""
    requeues: int = 0
    """Times the job went back to the queue after a failure (not a preemption)."""
    state: JobState | None = None
    """The core's state of the job as last announced."""


PHASES = {
    JobState.RUNNING: "running",
    JobState.ADMITTED: "restarting",
    JobState.STARTING: "restarting",
    JobState.PREEMPTED: "stopping",
    JobState.PENDING: "queued",
    JobState.REQUEUED: "queued",
}
"""Phases of a job's wall time after its first start, by core state."""


@dataclass
class Sample:
    """The cluster at one instant of the time series."""

    at_s: float
    allocated_gpus: int
    running_jobs: int
    queued_jobs: int
    down_hosts: int
    stranded_gpus: int
    largest_job: dict[str, int]


@dataclass
class Outcome:
    """What a run produced: the core's final job records plus the engine's series."""

    policy: str
    horizon_s: float
    gpus: int
    jobs: dict[str, Job]
    runs: dict[str, Run]
    rejected: dict[str, str]
    samples: list[Sample]
    busy_gpu_s: float
    repairs: int
    """Hosts repaired (resumed after a hardware or network failure)."""
    failures_injected: int
    events: int
    ticks: int
    repair: str = "queue"
    """How jobs came back from failures: ``queue`` or ``in-place``."""
    spares: tuple[str, ...] = ()
    """Hosts of the spare pool at the start (in-place runs)."""
    spares_at_end: tuple[str, ...] = ()
    """Hosts of the spare pool at the horizon."""


ProgressFn = Callable[[float], None]
AdmittedFn = Callable[[Job], None]
"""Told of every admission (the job record with its allocation)."""


def sim_scheduler_config(
    config: SimConfig, placement: PlacementParams, *, repair_in_place: bool = False
) -> SchedulerConfig:
    """The core's configuration for a simulation (deterministic cycles, no lost nodes, no
    blame delay; in-place repair as asked)."""
    return SchedulerConfig(
        heartbeat_timeout_s=NEVER_S,
        stop_grace_s=max(1.0, 2 * config.stop_s),
        start_timeout_s=max(600.0, 4 * config.checkpoint.restart_s),
        max_placement_seconds_per_cycle=None,
        placement=placement,
        repair_in_place=repair_in_place,
        blame_delay_s=0.0,
    )


def spare_hosts(index: TopologyIndex, per_leaf: int) -> tuple[str, ...]:
    """The last ``per_leaf`` hosts (by id) under every leaf switch (level 1)."""
    if per_leaf <= 0 or index.cluster_level <= 1:
        return ()
    names = index.host_names
    out: list[str] = []
    for leaf in range(index.num_domains(1)):
        hosts = sorted(index.hosts_under(1, leaf).tolist())
        out += [names[h] for h in hosts[-per_leaf:]] if len(hosts) > per_leaf else []
    return tuple(sorted(out))


class Engine:
    """One simulated run (see the module docstring)."""

    def __init__(
        self,
        index: TopologyIndex,
        jobs: list[SimJob],
        failures: list[FailureEvent],
        *,
        policy: str,
        placer: Placer,
        config: SimConfig,
        horizon_s: float,
        failure_rate_per_host_s: float,
        placement: PlacementParams | None = None,
        progress: ProgressFn | None = None,
        scheduler: Scheduler | None = None,
        origin: datetime = EPOCH,
        record: list[Event] | None = None,
        before_event: Callable[[], None] | None = None,
        on_admitted: AdmittedFn | None = None,
        measure_placements: bool = True,
        repair_in_place: bool = False,
    ) -> None:
        self.index = index
        self.jobs = jobs
        self.failures = failures
        self.policy = policy
        self.config = config
        self.horizon_s = horizon_s
        self.rate_per_host_s = failure_rate_per_host_s
        self.params = placement or PlacementParams(time_limit_s=0.25)
        self.progress = progress
        self.restored = scheduler is not None
        self.repair_in_place = repair_in_place
        self.scheduler = scheduler or Scheduler(
            index,
            sim_scheduler_config(config, self.params, repair_in_place=repair_in_place),
            placer=placer,
        )
        self.spares: tuple[str, ...] = ()
        self.origin = origin
        self.record = record
        self.before_event = before_event
        """Called before each timed event (an exception it raises ends the run)."""
        self.on_admitted = on_admitted
        self.measure_placements = measure_placements
        """Price each started placement against the ideal (the run-time model and the
        report's communication figures); off, every placement runs at the ideal rate."""
        self.admitted_at: dict[str, float] = {}
        """Job id -> when it was first admitted (given its placement)."""
        self.g = common_gpus_per_host(index)
        self.runs: dict[str, Run] = {j.id: Run(j) for j in jobs}
        self.rejected: dict[str, str] = {}
        self.samples: list[Sample] = []
        self.down_until: dict[int, float] = {}
        self.now = 0.0
        self.busy_gpu_s = 0.0
        self.repairs = 0
        self.events = 0
        self.ticks = 0
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._tick_at: float | None = None
        self._held = 0
        self._pending_up: set[tuple[str, int]] = set()
        self._ideal: dict[str, float] = {}

    # ------------------------------------------------------------------ plumbing

    def at(self, t: float) -> datetime:
        """The instant ``t`` seconds into the run."""
        return self.origin + timedelta(seconds=t)

    def push(self, t: float, kind: Kind, payload: object = None) -> None:
        """Schedule an event."""
        self._seq += 1
        heapq.heappush(self._heap, (t, int(kind), self._seq, payload))

    def feed(self, event: Event) -> None:
        """Hand one event to the core and execute what it returns."""
        self.events += 1
        if self.record is not None:
            self.record.append(event)
        self.apply(self.scheduler.handle(event))

    def want_tick(self) -> None:
        """Run a scheduling cycle at the next multiple of ``cycle_s``."""
        cycle = self.config.cycle_s
        t = max(self.now, math.ceil(self.now / cycle) * cycle)
        if self._tick_at is not None and self._tick_at <= t:
            return
        self._tick_at = t
        self.push(t, Kind.TICK)

    # ------------------------------------------------------------------ run

    def run(self) -> Outcome:
        """Run to the horizon and return the outcome."""
        self.feed(SchedulerStarted(self.at(0)))
        if self.restored:
            self._adopt()
        else:
            for name in self.index.host_names:
                gpus = self.scheduler.state.nodes[name].gpus
                self.feed(NodeRegistered(self.at(0), name, gpus, "sim"))
                self.feed(HeartbeatReceived(self.at(0), name, Health.HEALTHY))
            if self.repair_in_place:
                self.spares = spare_hosts(self.index, self.config.spares_per_leaf)
                if self.spares:
                    self.feed(NodeSpareSet(self.at(0), self.spares))
        known = self.scheduler.state.jobs
        for i, job in enumerate(self.jobs):
            if job.id not in known:
                self.push(job.submit_s, Kind.SUBMIT, i)
        self.want_tick()
        for i, failure in enumerate(self.failures):
            self.push(failure.at_s, Kind.FAIL, i)
        self.push(0.0, Kind.SAMPLE)
        last_progress = 0.0
        while self._heap and self._heap[0][0] < self.horizon_s:
            if self.before_event is not None:
                self.before_event()
            t, kind, _, payload = heapq.heappop(self._heap)
            self.busy_gpu_s += self._held * (t - self.now)
            self.now = t
            self.dispatch(Kind(kind), payload)
            self._held = sum(self.scheduler.state.queue_usage.values())
            if self.progress is not None and t - last_progress >= 3600:
                last_progress = t
                self.progress(t)
        self.busy_gpu_s += self._held * (self.horizon_s - self.now)
        self.now = self.horizon_s
        for run in self.runs.values():
            self._enter(run, None)
        if self.progress is not None:
            self.progress(self.horizon_s)
        return Outcome(
            policy=self.policy,
            horizon_s=self.horizon_s,
            gpus=self.index.num_gpus,
            jobs=dict(self.scheduler.state.jobs),
            runs=self.runs,
            rejected=self.rejected,
            samples=self.samples,
            busy_gpu_s=self.busy_gpu_s,
            repairs=self.repairs,
            failures_injected=sum(1 for f in self.failures if f.at_s < self.horizon_s),
            events=self.events,
            ticks=self.ticks,
            repair="in-place" if self.repair_in_place else "queue",
            spares=self.spares,
            spares_at_end=tuple(sorted(self.scheduler.state.spares)),
        )

    def _adopt(self) -> None:
        """A restored core: running jobs continue, preempted ones finish stopping."""
        state = self.scheduler.state
        for job_id in sorted(state.allocated):
            job = state.jobs[job_id]
            if job.state is JobState.RUNNING and job_id in self.runs:
                self._start_run(job)
            elif job.state is JobState.PREEMPTED and job.allocation is not None:
                nodes = [h for h in job.allocation.hosts if h not in job.stopped_hosts]
                self.push(self.config.stop_s, Kind.STOPPED, (job_id, job.restarts, nodes))
            elif job.state in (JobState.ADMITTED, JobState.STARTING):
                # Its start commands went out before the snapshot: the ranks come up.
                key = (job_id, job.restarts)
                self._pending_up.add(key)
                self.push(self.config.checkpoint.restart_s, Kind.UP, key)

    def dispatch(self, kind: Kind, payload: object) -> None:
        """Handle one timed event."""
        if kind is Kind.SUBMIT:
            self._submit(self.jobs[cast(int, payload)])
        elif kind is Kind.TICK:
            self._tick_at = None
            self.ticks += 1
            self.feed(TimerFired(self.at(self.now)))
            report = self.scheduler.last_cycle
            if report is not None and report.truncated:
                self.push(self.now + self.config.cycle_s, Kind.TICK)
        elif kind is Kind.UP:
            self._up(*cast(tuple[str, int], payload))
        elif kind is Kind.CHECKPOINT:
            self._checkpoint(*cast(tuple[str, int], payload))
        elif kind is Kind.DONE:
            self._done(*cast(tuple[str, int], payload))
        elif kind is Kind.STOPPED:
            job_id, attempt, nodes = cast(tuple[str, int, list[str]], payload)
            for node in nodes:
                self.feed(RanksStopped(self.at(self.now), job_id, node, attempt))
            self.want_tick()
        elif kind is Kind.FAIL:
            self._fail(self.failures[cast(int, payload)])
        elif kind is Kind.REPAIR:
            self._repair(cast(tuple[int, ...], payload))
        else:
            self._sample()
            self.push(self.now + self.config.sample_s, Kind.SAMPLE)

    # ------------------------------------------------------------------ actions

    def apply(self, actions: list[Action]) -> None:
        """Execute the core's actions on the simulated hosts."""
        stops: dict[tuple[str, int], list[str]] = {}
        for action in actions:
            if isinstance(action, StartRanks):
                key = (action.job_id, action.attempt)
                if key not in self._pending_up:
                    self._pending_up.add(key)
                    self.push(self.now + self.config.checkpoint.restart_s, Kind.UP, key)
            elif isinstance(action, StopRanks):
                stops.setdefault((action.job_id, action.attempt), []).append(action.node)
            elif isinstance(action, NotifyJobChanged):
                self._job_changed(action.job)
        for (job_id, attempt), nodes in stops.items():
            self.push(self.now + self.config.stop_s, Kind.STOPPED, (job_id, attempt, nodes))

    def _job_changed(self, job: Job) -> None:
        run = self.runs.get(job.id)
        if run is not None:
            if job.state is JobState.RUNNING and run.first_running_s is None:
                run.first_running_s = self.now
            if run.first_running_s is not None:
                self._enter(run, PHASES.get(job.state))
            last = job.failures[-1].reason if job.failures else None
            requeued = job.state is JobState.REQUEUED and run.state is not JobState.REQUEUED
            if requeued and last not in (None, "preempted"):
                run.requeues += 1
            run.state = job.state
        if job.state is JobState.ADMITTED:
            self.admitted_at.setdefault(job.id, self.now)
            if self.on_admitted is not None:
                self.on_admitted(job)
        elif job.state is JobState.RUNNING:
            self._start_run(job)
        elif is_terminal(job.state) or job.state is JobState.REQUEUED:
            self.want_tick()

    # ------------------------------------------------------------------ jobs

    def _submit(self, job: SimJob) -> None:
        event = JobSubmitted(self.at(self.now), job.id, job.spec, "sim")
        try:
            self.feed(event)
        except FirsthopError as exc:
            self.rejected[job.id] = exc.reason
            return
        self.want_tick()

    def _current(self, job_id: str, attempt: int) -> Job | None:
        job = self.scheduler.state.jobs.get(job_id)
        if job is None or job.restarts != attempt:
            return None
        return job

    def _up(self, job_id: str, attempt: int) -> None:
        self._pending_up.discard((job_id, attempt))
        job = self._current(job_id, attempt)
        if job is None or job.allocation is None:
            return
        if job.state not in (JobState.ADMITTED, JobState.STARTING):
            return
        for host in job.allocation.hosts:
            self.feed(RanksStarted(self.at(self.now), job_id, host, attempt))

    def _start_run(self, job: Job) -> None:
        run = self.runs.get(job.id)
        alloc = job.allocation
        if run is None or alloc is None or run.attempt == job.restarts:
            return
        run.attempt = job.restarts
        ideal = self._ideal_ms(job) if self.measure_placements else alloc.cost
        cross = 0.0
        if len(alloc.hosts) > 1 and self.measure_placements:
            host_ids = np.fromiter(
                (self.index.host_ids[s.host] for s in alloc.ranks), np.int64, len(alloc.ranks)
            )
            request = job.spec.to_request()
            cross = rank_cost(self.index, request, self.params, host_ids).cross_tier_gb
        run.placements.append((alloc.cost, ideal, cross))
        run.rate = 1.0 / slowdown(alloc.cost, ideal, self.config.run)
        hosts = len(alloc.hosts)
        run.interval_s = checkpoint_interval_s(
            hosts, self.rate_per_host_s, self.config.checkpoint, run.job.checkpoint_interval_s
        )
        run.segment_start = self.now
        self._schedule_segment(run)

    def _enter(self, run: Run, phase: str | None) -> None:
        """Close the run's current phase at now and open ``phase``."""
        if run.phase is not None:
            spent = self.now - run.phase_since
            run.phases[run.phase] = run.phases.get(run.phase, 0.0) + spent
        run.phase, run.phase_since = phase, self.now

    def _ideal_ms(self, job: Job) -> float:
        """Communication cost of the job's shape on the empty cluster (``ideal_ms`` of the
        placer's lower bound): the placement the trace's run time stands for."""
        request = job.spec.to_request()
        key = request.model_dump_json()
        ideal = self._ideal.get(key)
        if ideal is None:
            result = run_placer(Snapshot.empty(self.index), request, self.params)
            ideal = result.lower_bound.ideal_ms if isinstance(result, Placement) else 0.0
            self._ideal[key] = ideal
        return ideal

    def _schedule_segment(self, run: Run) -> None:
        remaining = max(0.0, run.job.work_s - run.saved_s)
        wall = remaining / run.rate
        key = (run.job.id, run.attempt)
        if wall <= run.interval_s:
            self.push(self.now + wall, Kind.DONE, key)
        else:
            self.push(
                self.now + run.interval_s + self.config.checkpoint.save_s, Kind.CHECKPOINT, key
            )

    def _checkpoint(self, job_id: str, attempt: int) -> None:
        job = self._current(job_id, attempt)
        if job is None or job.state is not JobState.RUNNING:
            return
        run = self.runs[job_id]
        run.saved_s += run.interval_s * run.rate
        run.useful_s += run.interval_s
        run.checkpoints += 1
        self.feed(CheckpointReported(self.at(self.now), job_id, attempt))
        run.segment_start = self.now
        self._schedule_segment(run)

    def _done(self, job_id: str, attempt: int) -> None:
        job = self._current(job_id, attempt)
        if job is None or job.state is not JobState.RUNNING or job.allocation is None:
            return
        run = self.runs[job_id]
        run.useful_s += (run.job.work_s - run.saved_s) / run.rate
        run.saved_s = run.job.work_s
        at = self.at(self.now)
        for slot in job.allocation.ranks:
            self.feed(RankExited(at, job_id, slot.host, attempt, slot.rank, 0))

    # ------------------------------------------------------------------ failures

    def _fail(self, failure: FailureEvent) -> None:
        state = self.scheduler.state
        names = self.index.host_names
        if failure.kind is FailureKind.SOFTWARE:
            host = failure.hosts[0]
            for job in state.jobs_on(names[host]):
                if job.state is JobState.RUNNING and job.allocation is not None:
                    slot = next(s for s in job.allocation.ranks if s.host == names[host])
                    at = self.at(self.now)
                    self.feed(RankExited(at, job.id, slot.host, job.restarts, slot.rank, 1))
                    break
            return
        downed: list[int] = []
        for host in failure.hosts:
            if host in self.down_until:
                continue
            node = state.nodes[names[host]]
            if node.state not in (NodeState.READY, NodeState.DRAINING):
                continue
            self.down_until[host] = self.now + failure.repair_s
            downed.append(host)
            self.feed(
                HeartbeatReceived(
                    self.at(self.now), names[host], Health.FAILED, detail=failure.cause
                )
            )
        if downed:
            self.push(self.now + failure.repair_s, Kind.REPAIR, tuple(downed))
            self.want_tick()

    def _repair(self, hosts: tuple[int, ...]) -> None:
        names = self.index.host_names
        at = self.at(self.now)
        for host in hosts:
            self.down_until.pop(host, None)
            self.feed(NodeResumeRequested(at, names[host], "repaired"))
            self.feed(HeartbeatReceived(at, names[host], Health.HEALTHY))
            self.repairs += 1
            if self.spares:
                self._swap_spare(host)
        self.want_tick()

    def _swap_spare(self, host: int) -> None:
        """Keep the pool as an operator would when ``host`` returns (module docstring)."""
        state = self.scheduler.state
        names, index = self.index.host_names, self.index
        at = self.at(self.now)
        consumed = tuple(
            sorted(
                name
                for name, node in state.nodes.items()
                if node.spare
                and any(not state.jobs[j].spec.preemptible for j in state.host_jobs.get(name, ()))
            )
        )
        if consumed:
            self.feed(NodeSpareSet(at, consumed, spare=False))
        name = names[host]
        if state.nodes[name].spare or state.host_jobs.get(name) or index.cluster_level <= 1:
            return
        leaf = index.ancestors[host, 1]
        pool = sum(1 for h in index.hosts_under(1, leaf).tolist() if state.nodes[names[h]].spare)
        if pool < self.config.spares_per_leaf:
            self.feed(NodeSpareSet(at, (name,)))

    # ------------------------------------------------------------------ series

    def _sample(self) -> None:
        state = self.scheduler.state
        index = self.index
        usable = state.usable_hosts()
        free = index.free_gpus_per_host(state.busy) * usable
        frag = fragmentation(index, free, usable, self.g, STRANDED_LEAF_HOSTS)
        running = sum(1 for j in state.allocated if state.jobs[j].state is JobState.RUNNING)
        self.samples.append(
            Sample(
                at_s=self.now,
                allocated_gpus=sum(state.queue_usage.values()),
                running_jobs=running,
                queued_jobs=sum(len(k) for k in state.pending.values()),
                down_hosts=len(self.down_until),
                stranded_gpus=frag.stranded_gpus,
                largest_job=dict(frag.largest_job),
            )
        )
