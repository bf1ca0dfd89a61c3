"""Run time at a placement, and the checkpoint cadence the scheduler chooses.

**Run time.** A trace gives a job's run time ``W`` at an ideal placement. One training step
takes ``step_compute_ms`` of compute plus exposed communication; a placement whose modelled
communication cost per step (``Placement.cost_ms``, the placer's cost model) is ``cost`` where
the ideal placement's is ``ideal`` (``LowerBound.ideal_ms``: every host free) exposes
``exposure * (cost - ideal)`` more milliseconds per step, so the job runs::

    slowdown = (step_compute_ms + exposure * max(0, cost - ideal)) / step_compute_ms
    run time = W * slowdown

``exposure`` (the share of extra communication not hidden behind compute) is the model's main
parameter; the report's sensitivity table re-runs the comparison at other values.

**Checkpoint cadence** (Young 1974; Daly 2006; shared/data/reliability section 4): with save
cost ``C``, restart cost ``R`` and the job's mean time between failures ``M``, the interval
between checkpoints that minimises expected lost time is ``T = sqrt(2 C (M + R))``. ``M`` is
``1 / (hosts * rate per host)`` from the failure model's rate.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import math

from scheduler.sim.config import CheckpointModel, RunModel


def slowdown(cost_ms: float, ideal_ms: float, model: RunModel) -> float:
    """Run-time factor of a placement (module docstring); 1 at the ideal placement."""
    extra = max(0.0, cost_ms - ideal_ms) * model.exposure
    return (model.step_compute_ms + extra) / model.step_compute_ms


def young_daly_interval_s(save_s: float, mtbf_s: float, restart_s: float) -> float:
    """``sqrt(2 C (M + R))``: Daly's first-order optimum checkpoint interval (seconds)."""
    return math.sqrt(2.0 * save_s * (mtbf_s + restart_s))


def checkpoint_interval_s(
    hosts: int,
    failures_per_host_s: float,
    model: CheckpointModel,
    given_s: float | None = None,
) -> float:
    """The job's checkpoint interval: ``given_s`` when the user set one, else Young/Daly."""
    if given_s is not None:
        return given_s
    if failures_per_host_s <= 0 or model.save_s <= 0:
        return model.default_interval_s
    mtbf = 1.0 / (hosts * failures_per_host_s)
    return max(model.min_interval_s, young_daly_interval_s(model.save_s, mtbf, model.restart_s))
