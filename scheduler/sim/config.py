"""Parameters of a simulation run: timing of the simulated agents, the run-time model, the
checkpoint model and the failure model.

Every figure that shapes a result is here, with its default and where the default comes from,
so a report can print the whole configuration it was produced with.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from placement import PlacementParams

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class RunModel(BaseModel):
    """How long a job runs at a placement (see :mod:`scheduler.sim.runmodel`).

    Attributes:
        step_compute_ms: compute time of one training step (the part communication cost
            does not change). Llama 3 405B steps took several seconds; 2,000 ms is a round
            middle for the trace's smaller jobs.
        exposure: fraction of the extra communication time (placement cost above the ideal
            placement's) that is not hidden behind compute. The main parameter of the model;
            the report's sensitivity table varies it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_compute_ms: Positive = 2000.0
    exposure: Fraction = 0.5


class CheckpointModel(BaseModel):
    """Checkpoint and restart costs of simulated jobs.

    Attributes:
        save_s: wall time one checkpoint costs a running job (the job makes no progress
            meanwhile). Llama 3: up to 4 GB per GPU at 2 TB/s shared (shared/data/reliability
            section 4) is ~30 s for a full save of 16K GPUs; asynchronous in-memory saves
            (GEMINI, MegaScale) cut it to seconds.
        restart_s: time from the start command to all ranks running (process start,
            rendezvous, checkpoint load). FlashRecovery reports ~150 s at 4,800 devices.
        min_interval_s: shortest cadence the scheduler chooses.
        default_interval_s: cadence when no failure rate is known (no failure model).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    save_s: NonNegative = 10.0
    restart_s: NonNegative = 120.0
    min_interval_s: Positive = 60.0
    default_interval_s: Positive = 3600.0


class FailureModel(BaseModel):
    """Failure injection (see :mod:`scheduler.sim.failures`).

    Attributes:
        scale: multiplier on every rate of the mix (1 = as published).
        gpu_repair_h: hours until a host with a failed GPU (or host part) returns (swap and
            deep health check).
        software_restart_s: a software failure leaves the host healthy; nothing to repair.
        network_repair_h: hours until a failed leaf switch or cable is repaired.
        leaf_share: share of network failures that take a whole leaf switch down (the rest
            are one host's cable or NIC link).
        maintenance_repair_h: hours of an unplanned host maintenance.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: NonNegative = 1.0
    gpu_repair_h: Positive = 24.0
    software_restart_s: NonNegative = 0.0
    network_repair_h: Positive = 2.0
    leaf_share: Fraction = 0.25
    maintenance_repair_h: Positive = 4.0


class SimConfig(BaseModel):
    """Everything a run needs besides topology, workload, failures and policies.

    Attributes:
        cycle_s: the scheduler's tick period: after anything changes, the next scheduling
            cycle runs at the next multiple of it (a runtime ticks periodically too).
        stop_s: time for agents to report ranks stopped after a stop command.
        sample_s: period of the utilisation, queue and fragmentation time series.
        large_job_gpus: jobs at least this large get an ETTR entry in the report.
        spares_per_leaf: hosts of every leaf switch (the last ones by name) put into the
            core's spare pool in runs that repair in place (policy label ``NAME:in-place``):
            only preemptible jobs may use them, and in-place repairs take them first. Runs
            that repair through the queue get the same hosts as ordinary capacity (a pool
            only the repair path may draw from would only shrink what the queue can use).
            Meta's Llama 3 cluster kept a few percent of hosts spare; 1 of 17 per leaf is 6 %.
        run: the run-time model.
        checkpoint: checkpoint and restart costs.
        failures: the failure model.
        placement: parameters of every placer call (the scheduler's defaults: a 0.25 s
            CP-SAT budget per job).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cycle_s: Positive = 30.0
    stop_s: NonNegative = 5.0
    sample_s: Positive = 3600.0
    large_job_gpus: Annotated[int, Field(ge=1)] = 512
    spares_per_leaf: Annotated[int, Field(ge=0)] = 0
    run: RunModel = Field(default_factory=RunModel)
    checkpoint: CheckpointModel = Field(default_factory=CheckpointModel)
    failures: FailureModel = Field(default_factory=FailureModel)
    placement: PlacementParams = Field(default_factory=lambda: PlacementParams(time_limit_s=0.25))
