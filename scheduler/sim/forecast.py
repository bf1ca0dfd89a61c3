"""Start-time forecast from a live scheduler's state, like Slurm's ``squeue --start``.

:func:`snapshot` copies what a forecast needs out of a live
:class:`~scheduler.core.state.SchedulerState` (the topology index, the job, node and queue
records, the core's configuration and placer). Records are immutable, so this is a few list
copies: cheap enough for the event loop that owns the state. :func:`run_forecast` then builds a
fresh production core from the snapshot and runs the simulator forward from ``now`` with no
failures and no new arrivals, on any thread; the live state is never touched.

What the simulation assumes:

- running jobs end at their time limits (``started_at + time_limit_s``); queued jobs run for
  theirs once started; jobs starting now (admitted, starting) and jobs being preempted go on
  as the core would have them;
- a job without a time limit runs for the core's ``default_time_limit_s``, the assumption its
  backfill plans with; one already running longer than that is assumed to run that long again
  from now (it evidently does not stop at the default). Such jobs are listed in
  :attr:`Forecast.assumed_limits`;
- the core's own cycle (order, fair share, backfill, preemption, placement) decides who starts
  when and where; nodes keep their states (drained hosts stay drained).

The estimate is as good as the time limits: jobs that end early start their successors
earlier, exactly as with Slurm's estimate.

A forecast stops early once every queued job has started, and when its wall-clock ``budget_s``
runs out (checked before each simulated event and each placer call): the answer then holds the
starts found so far and says how far it got (:attr:`Forecast.simulated_until`,
:attr:`Forecast.complete`). Wiring into ``firsthop explain`` and ``firsthopctl cluster
forecast`` is the API's (:mod:`scheduler.api.forecast`).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from placement import Placement, PlacementFailure, PlacementParams, PlacementRequest, Snapshot
from placement import place as run_placer
from scheduler.core.config import SchedulerConfig
from scheduler.core.cycle import Placer
from scheduler.core.records import Job, Node, Queue
from scheduler.core.scheduler import Scheduler
from scheduler.core.state import SchedulerState
from scheduler.core.states import QUEUED_JOB_STATES, JobState
from scheduler.sim.config import CheckpointModel, RunModel, SimConfig
from scheduler.sim.engine import Engine, sim_scheduler_config
from scheduler.sim.workload import SimJob
from topology.errors import InvalidInputError
from topology.index import TopologyIndex

FORECAST_CONFIG = SimConfig(
    cycle_s=1.0,
    stop_s=0.0,
    sample_s=365 * 86400.0,
    checkpoint=CheckpointModel(restart_s=0.0, save_s=0.0, default_interval_s=365 * 86400.0),
    run=RunModel(exposure=0.0),
)
"""Agents act at once, nothing is checkpointed and time limits are wall time whatever the
placement: only the time limits move time."""

DEFAULT_HORIZON_S = 30 * 86400.0
WAITING_STATES = QUEUED_JOB_STATES | {JobState.PREEMPTED}
"""Jobs a forecast estimates a start for: queued, and being stopped (they queue again)."""
IN_FLIGHT_STATES = frozenset({JobState.ADMITTED, JobState.STARTING})


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """What a forecast reads from a live scheduler, taken at one instant (:func:`snapshot`)."""

    index: TopologyIndex
    jobs: tuple[Job, ...]
    nodes: tuple[Node, ...]
    queues: tuple[Queue, ...]
    config: SchedulerConfig
    now: datetime
    placer: Placer = run_placer


@dataclass(frozen=True, slots=True)
class Forecast:
    """Estimated start of each waiting job.

    Attributes:
        at: the instant the state was taken.
        starts: job id -> estimated start, or ``None`` when it does not start within what was
            simulated (the horizon, or as far as the budget reached: see ``complete``).
        horizon_s: how far ahead the simulation was allowed to look.
        hosts: job id -> hosts of the placement the simulation gave it at its start, in the
            order the core admitted the jobs.
        simulated_until: how far the simulation got (``at + horizon_s`` at most).
        complete: every waiting job started or the horizon was reached (``False``: the
            compute budget ran out first, so jobs without a start may start sooner).
        compute_s: wall-clock seconds the simulation took.
        assumed_limits: jobs without a time limit whose run time was assumed (see the module
            docstring), running and waiting alike.
        default_time_limit_s: the run time assumed for them.
    """

    at: datetime
    starts: dict[str, datetime | None]
    horizon_s: float
    hosts: dict[str, tuple[str, ...]]
    simulated_until: datetime
    complete: bool
    compute_s: float
    assumed_limits: frozenset[str]
    default_time_limit_s: float


class _Stop(Exception):  # noqa: N818 - control flow, never leaves this module
    """Ends the simulation early (every waiting job started, or the budget ran out)."""

    def __init__(self, budget: bool) -> None:
        super().__init__("budget" if budget else "done")
        self.budget = budget


def snapshot(
    state: SchedulerState, config: SchedulerConfig, now: datetime, placer: Placer = run_placer
) -> LiveSnapshot:
    """The records a forecast needs, copied out of a live state (cheap: records are
    immutable, only the containers are copied)."""
    return LiveSnapshot(
        index=state.index,
        jobs=tuple(state.jobs.values()),
        nodes=tuple(state.nodes.values()),
        queues=tuple(state.queues.values()),
        config=config,
        now=now,
        placer=placer,
    )


def forecast(
    state: SchedulerState,
    now: datetime,
    *,
    config: SchedulerConfig | None = None,
    placer: Placer = run_placer,
    horizon_s: float = DEFAULT_HORIZON_S,
    budget_s: float = math.inf,
) -> Forecast:
    """Estimated start times of the waiting jobs of ``state`` (module docstring): a
    :func:`snapshot` then :func:`run_forecast`, on the caller's thread.

    Raises:
        InvalidInputError: ``invalid_horizon`` for a horizon that is not positive,
            ``invalid_budget`` for a budget that is not.
    """
    live = SchedulerConfig() if config is None else config
    return run_forecast(snapshot(state, live, now, placer), horizon_s=horizon_s, budget_s=budget_s)


def run_forecast(
    snap: LiveSnapshot,
    *,
    horizon_s: float = DEFAULT_HORIZON_S,
    budget_s: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> Forecast:
    """Simulate ``snap`` forward (module docstring); safe on any thread.

    Args:
        snap: the live state (:func:`snapshot`).
        horizon_s: simulated seconds to look ahead at most.
        budget_s: wall-clock seconds to spend at most (checked between simulated events and
            before each placer call, so one placer call may overrun it).
        clock: the wall clock the budget is measured on.

    Raises:
        InvalidInputError: ``invalid_horizon`` for a horizon that is not positive,
            ``invalid_budget`` for a budget that is not.
    """
    if not horizon_s > 0 or math.isinf(horizon_s):
        raise InvalidInputError(
            f"horizon {horizon_s} s must be > 0 and finite", reason="invalid_horizon"
        )
    if not budget_s > 0:
        raise InvalidInputError(f"budget {budget_s} s must be > 0", reason="invalid_budget")
    began = clock()
    deadline = began + budget_s
    live = snap.config
    now = snap.now

    def placer(
        snapshot: Snapshot, request: PlacementRequest, params: PlacementParams
    ) -> Placement | PlacementFailure:
        if clock() >= deadline:
            raise _Stop(budget=True)
        return snap.placer(snapshot, request, params)

    params: PlacementParams = live.placement
    core_config = sim_scheduler_config(FORECAST_CONFIG, params).model_copy(
        update={
            "default_time_limit_s": live.default_time_limit_s,
            "backfill": live.backfill,
            "preemption": live.preemption,
            "default_queue": live.default_queue,
            "max_placements_per_cycle": live.max_placements_per_cycle,
            "max_reservation_placements": live.max_reservation_placements,
            "max_preemption_placements": live.max_preemption_placements,
            "repair_in_place": live.repair_in_place,
        }
    )
    core = Scheduler(
        snap.index,
        core_config,
        jobs=snap.jobs,
        nodes=snap.nodes,
        queues=snap.queues,
        placer=placer,
    )
    jobs, waiting, assumed = _sim_jobs(snap)
    left = set(waiting)
    hosts: dict[str, tuple[str, ...]] = {}

    def admitted(job: Job) -> None:
        if job.id in left:
            left.discard(job.id)
            hosts[job.id] = () if job.allocation is None else job.allocation.hosts

    def check() -> None:
        if not left:
            raise _Stop(budget=False)
        if clock() >= deadline:
            raise _Stop(budget=True)

    engine = Engine(
        snap.index,
        jobs,
        [],
        policy="forecast",
        placer=placer,
        config=FORECAST_CONFIG,
        horizon_s=horizon_s,
        failure_rate_per_host_s=0.0,
        placement=params,
        scheduler=core,
        origin=now,
        before_event=check,
        on_admitted=admitted,
        measure_placements=False,
    )
    complete = True
    try:
        engine.run()
    except _Stop as stop:
        complete = not stop.budget
    reached = min(engine.now, horizon_s)
    starts: dict[str, datetime | None] = {}
    for job_id in waiting:
        t = engine.admitted_at.get(job_id)
        starts[job_id] = None if t is None else now + timedelta(seconds=t)
    return Forecast(
        at=now,
        starts=starts,
        horizon_s=horizon_s,
        hosts=hosts,
        simulated_until=now + timedelta(seconds=reached),
        complete=complete,
        compute_s=clock() - began,
        assumed_limits=frozenset(assumed),
        default_time_limit_s=float(live.default_time_limit_s),
    )


def _sim_jobs(snap: LiveSnapshot) -> tuple[list[SimJob], list[str], list[str]]:
    """The simulator's jobs (run time left or to come), the waiting ids and the ids whose
    run time is assumed, all in id order."""
    default_limit = float(snap.config.default_time_limit_s)
    jobs: list[SimJob] = []
    waiting: list[str] = []
    assumed: list[str] = []
    for job in sorted(snap.jobs, key=lambda j: j.id):
        limit = job.spec.time_limit_s
        run_s = float(limit or default_limit)
        if job.state is JobState.RUNNING and job.started_at is not None:
            left = (job.started_at + timedelta(seconds=run_s) - snap.now).total_seconds()
            if limit is None and left <= 0:
                left = default_limit
            jobs.append(SimJob(job.id, 0.0, max(0.0, left), job.spec, "live"))
        elif job.state in WAITING_STATES or job.state in IN_FLIGHT_STATES:
            jobs.append(SimJob(job.id, 0.0, run_s, job.spec, "live"))
            if job.state in WAITING_STATES:
                waiting.append(job.id)
        else:
            continue
        if limit is None:
            assumed.append(job.id)
    return jobs, waiting, assumed
