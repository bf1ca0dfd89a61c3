"""One simulation study: every policy on the same arrivals and failures, then the report.

:func:`simulate` builds the workload and the failure schedule once from the seed, runs an
:class:`~scheduler.sim.engine.Engine` per policy (each with a fresh production core), and
assembles the report dictionary (``report.json``). With ``sensitivity`` exposures it re-runs
every policy at each of them (the run-time model's main parameter).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scheduler.sim.config import SimConfig
from scheduler.sim.engine import Engine, Outcome, ProgressFn
from scheduler.sim.failures import (
    FailureEvent,
    llama3_rate_per_host_s,
    llama3_schedule,
    load_schedule,
)
from scheduler.sim.metrics import policy_metrics, ratios
from scheduler.sim.policies import FIRSTHOP, REPAIR_IN_PLACE, placer_for, split_policy
from scheduler.sim.workload import TRACE_DIR, SimJob, build_workload
from topology.index import TopologyIndex

DAY = 86400.0


@dataclass(frozen=True)
class Study:
    """What to simulate.

    Attributes:
        index: the topology.
        topology: how the topology was given (for the report).
        workload: the workload spec (:mod:`scheduler.sim.workload`).
        policies: policy labels (``NAME[:REPAIR]``, :mod:`scheduler.sim.policies`), compared
            in this order.
        failures: ``none``, ``llama3`` or a CSV path.
        days: simulated days.
        seed: seed of workload and failures.
        config: simulation parameters.
        sensitivity: further values of ``config.run.exposure`` to re-run every policy at.
        checkpoint_interval_s: a checkpoint cadence given for every job (``None``: the
            scheduler chooses by Young/Daly).
        trace_dir: where the traces are.
    """

    index: TopologyIndex
    topology: str
    workload: str
    policies: tuple[str, ...]
    failures: str = "none"
    days: float = 1.0
    seed: int = 0
    config: SimConfig = field(default_factory=SimConfig)
    sensitivity: tuple[float, ...] = ()
    checkpoint_interval_s: float | None = None
    trace_dir: Path = TRACE_DIR


ProgressFactory = Callable[[str], ProgressFn | None]


def failure_schedule(study: Study) -> tuple[list[FailureEvent], float]:
    """The failure events of the study and the per-host failure rate (per second)."""
    horizon = study.days * DAY
    if study.failures == "none":
        return [], 0.0
    if study.failures == "llama3":
        model = study.config.failures
        events = llama3_schedule(study.index, horizon, model, study.seed)
        return events, llama3_rate_per_host_s(model.scale)
    events = load_schedule(Path(study.failures), study.index)
    rate = len(events) / (study.index.num_hosts * horizon)
    return events, rate


def study_jobs(study: Study) -> list[SimJob]:
    """The workload of the study."""
    jobs = build_workload(
        study.workload,
        cluster_gpus=study.index.num_gpus,
        horizon_s=study.days * DAY,
        seed=study.seed,
        trace_dir=study.trace_dir,
    )
    if study.checkpoint_interval_s is not None:
        jobs = [replace(j, checkpoint_interval_s=study.checkpoint_interval_s) for j in jobs]
    return jobs


def run_policy(
    study: Study,
    policy: str,
    *,
    jobs: list[SimJob],
    failures: list[FailureEvent],
    rate: float,
    config: SimConfig | None = None,
    progress: ProgressFn | None = None,
) -> Outcome:
    """One policy's run (``policy``: a label ``NAME[:REPAIR]``)."""
    name, repair = split_policy(policy)
    engine = Engine(
        study.index,
        jobs,
        failures,
        policy=policy,
        placer=placer_for(name),
        config=config or study.config,
        horizon_s=study.days * DAY,
        failure_rate_per_host_s=rate,
        placement=(config or study.config).placement,
        progress=progress,
        repair_in_place=repair == REPAIR_IN_PLACE,
    )
    return engine.run()


def simulate(
    study: Study, progress: ProgressFactory | None = None
) -> tuple[dict[str, Any], list[Outcome]]:
    """Run the study; return the report dictionary and each policy's outcome."""
    start = time.perf_counter()
    cpu = time.process_time()
    jobs = study_jobs(study)
    failures, rate = failure_schedule(study)
    outcomes: list[Outcome] = []
    results: dict[str, dict[str, Any]] = {}
    restart = study.config.checkpoint.restart_s
    save = study.config.checkpoint.save_s
    for policy in study.policies:
        outcome = run_policy(
            study,
            policy,
            jobs=jobs,
            failures=failures,
            rate=rate,
            progress=progress(policy) if progress else None,
        )
        outcomes.append(outcome)
        results[policy] = policy_metrics(outcome, study.config.large_job_gpus, restart, save)
    sensitivity: dict[str, dict[str, dict[str, Any]]] = {}
    if study.sensitivity:
        main = study.config.run.exposure
        sensitivity[f"{main:g}"] = {p: _brief(results[p]) for p in study.policies}
        for exposure in study.sensitivity:
            if exposure == main:
                continue
            config = study.config.model_copy(
                update={"run": study.config.run.model_copy(update={"exposure": exposure})}
            )
            row: dict[str, dict[str, Any]] = {}
            for policy in study.policies:
                label = f"{policy}@{exposure:g}"
                outcome = run_policy(
                    study,
                    policy,
                    jobs=jobs,
                    failures=failures,
                    rate=rate,
                    config=config,
                    progress=progress(label) if progress else None,
                )
                metrics = policy_metrics(outcome, study.config.large_job_gpus, restart, save)
                row[policy] = _brief(metrics)
            sensitivity[f"{exposure:g}"] = row
    reference = next(
        (p for p in study.policies if split_policy(p)[0] == FIRSTHOP), study.policies[0]
    )
    report: dict[str, Any] = {
        "seed": study.seed,
        "days": study.days,
        "gpus": study.index.num_gpus,
        "hosts": study.index.num_hosts,
        "topology": study.topology,
        "workload": study.workload,
        "failures": study.failures,
        "failure_events": sum(1 for f in failures if f.at_s < study.days * DAY),
        "failure_rate_per_host_day": rate * DAY,
        "jobs": len(jobs),
        "policies": results,
        "reference": reference,
        "ratios": ratios(results, reference) if len(results) > 1 else {},
        "sensitivity": sensitivity,
        "config": study.config.model_dump(mode="json"),
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
    }
    return report, outcomes


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("utilisation", "jct_mean_s", "jct_p99_s", "comm_cost_mean", "jobs_finished")
    return {k: metrics[k] for k in keys}
