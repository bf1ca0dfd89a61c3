"""Start-time forecast from a live scheduler's state, like Slurm's ``squeue --start``.

:func:`forecast` copies the records of a :class:`~scheduler.core.state.SchedulerState`
(topology, nodes, queues, running and queued jobs) into a fresh production core and runs the
simulator forward from ``now`` with no failures and no new arrivals: running jobs end at their
time limits, queued jobs run for theirs once admitted (jobs without a limit for the core's
``default_time_limit_s``, the same assumption its backfill plans with), and the core's own
cycle (order, fair share, backfill, placement) decides who starts when. The live state is
never touched.

The estimate is as good as the time limits: jobs that end early start their successors
earlier, exactly as with Slurm's estimate.

Wiring into ``firsthop explain`` / ``firsthopctl cluster forecast`` belongs to the API layer
and is not done here.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from placement import PlacementParams
from placement import place as run_placer
from scheduler.core.config import SchedulerConfig
from scheduler.core.cycle import Placer
from scheduler.core.scheduler import Scheduler
from scheduler.core.state import SchedulerState
from scheduler.core.states import QUEUED_JOB_STATES, JobState
from scheduler.sim.config import CheckpointModel, RunModel, SimConfig
from scheduler.sim.engine import Engine, sim_scheduler_config
from scheduler.sim.workload import SimJob
from topology.errors import InvalidInputError

FORECAST_CONFIG = SimConfig(
    cycle_s=1.0,
    stop_s=0.0,
    sample_s=365 * 86400.0,
    checkpoint=CheckpointModel(restart_s=0.0, save_s=0.0, default_interval_s=365 * 86400.0),
    run=RunModel(exposure=0.0),
)
"""Agents act at once, nothing is checkpointed and time limits are wall time whatever the
placement: only the time limits move time."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """Estimated start of each queued job.

    Attributes:
        at: when the forecast was made.
        starts: job id -> estimated start, or ``None`` when it does not start within the
            horizon (for example it fits nowhere while drained hosts stay drained).
        horizon_s: how far ahead the simulation looked.
    """

    at: datetime
    starts: dict[str, datetime | None]
    horizon_s: float


def forecast(
    state: SchedulerState,
    now: datetime,
    *,
    config: SchedulerConfig | None = None,
    placer: Placer = run_placer,
    horizon_s: float = 30 * 86400.0,
) -> Forecast:
    """Estimated start times of the queued jobs of ``state`` (module docstring).

    Raises:
        InvalidInputError: ``invalid_horizon`` for a horizon that is not positive.
    """
    if not horizon_s > 0:
        raise InvalidInputError(f"horizon {horizon_s} s must be > 0", reason="invalid_horizon")
    live = SchedulerConfig() if config is None else config
    params: PlacementParams = live.placement
    core_config = sim_scheduler_config(FORECAST_CONFIG, params).model_copy(
        update={
            "default_time_limit_s": live.default_time_limit_s,
            "backfill": live.backfill,
            "preemption": live.preemption,
            "default_queue": live.default_queue,
            "max_placements_per_cycle": live.max_placements_per_cycle,
        }
    )
    core = Scheduler(
        state.index,
        core_config,
        jobs=state.jobs.values(),
        nodes=state.nodes.values(),
        queues=state.queues.values(),
        placer=placer,
    )
    default_limit = float(live.default_time_limit_s)
    jobs: list[SimJob] = []
    queued: list[str] = []
    for job_id, job in sorted(state.jobs.items()):
        limit = float(job.spec.time_limit_s or default_limit)
        if job.state is JobState.RUNNING and job.started_at is not None:
            left = (job.started_at + timedelta(seconds=limit) - now).total_seconds()
            jobs.append(SimJob(job_id, 0.0, max(0.0, left), job.spec, "live"))
        elif job.state in QUEUED_JOB_STATES or job.state in (JobState.ADMITTED, JobState.STARTING):
            jobs.append(SimJob(job_id, 0.0, limit, job.spec, "live"))
            if job.state in QUEUED_JOB_STATES:
                queued.append(job_id)
    engine = Engine(
        state.index,
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
    )
    engine.run()
    starts: dict[str, datetime | None] = {}
    for job_id in queued:
        t = engine.admitted_at.get(job_id)
        starts[job_id] = None if t is None else now + timedelta(seconds=t)
    return Forecast(now, starts, horizon_s)
