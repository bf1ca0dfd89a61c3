"""Small clusters, workloads and engines for the simulator's tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from scheduler.core.events import Event
from scheduler.sim.config import FailureModel, SimConfig
from scheduler.sim.engine import Engine, Outcome
from scheduler.sim.failures import FailureEvent, llama3_rate_per_host_s, llama3_schedule
from scheduler.sim.policies import placer_for
from scheduler.sim.workload import SimJob, _spec, llm_shape
from topology.generators import fat_tree
from topology.index import TopologyIndex
from topology.model import Topology

DAY = 86400.0


def index(
    pods: int = 2, leaves: int = 2, hosts: int = 4, oversubscription: float = 4.0
) -> TopologyIndex:
    """A small fat tree (hosts h0001.. in pod/leaf order)."""
    return Topology.from_spec(
        fat_tree(pods, leaves, hosts, oversubscription=oversubscription)
    ).index


def job(job_id: str, submit_s: float, gpus: int, work_s: float, **fields: Any) -> SimJob:
    """A job; multi-host jobs get the synthetic LLM shape."""
    par = llm_shape(gpus) if gpus >= 64 else None
    return SimJob(job_id, submit_s, work_s, _spec(job_id, gpus, par, **fields), "test")


def mixed_jobs(count: int, seed: int, max_gpus: int = 32) -> list[SimJob]:
    """Random small and multi-host jobs over a day."""
    rng = np.random.default_rng(seed)
    sizes = [s for s in (1, 2, 4, 8, 16, 32, 64) if s <= max_gpus]
    out = []
    for i in range(count):
        gpus = int(rng.choice(sizes))
        out.append(
            job(
                f"j{i:03d}", float(rng.uniform(0, DAY / 2)), gpus, float(rng.uniform(600, 4 * 3600))
            )
        )
    return sorted(out, key=lambda j: j.submit_s)


def failures(idx: TopologyIndex, days: float, scale: float, seed: int = 0) -> list[FailureEvent]:
    """The Llama 3 mix at ``scale`` times its rates."""
    return llama3_schedule(idx, days * DAY, FailureModel(scale=scale, gpu_repair_h=2.0), seed)


def engine(
    idx: TopologyIndex,
    jobs: list[SimJob],
    fails: list[FailureEvent],
    policy: str = "firsthop",
    days: float = 1.0,
    *,
    scale: float = 1.0,
    record: list[Event] | None = None,
    config: SimConfig | None = None,
) -> Engine:
    """An engine for one policy."""
    return Engine(
        idx,
        jobs,
        fails,
        policy=policy,
        placer=placer_for(policy),
        config=config or SimConfig(),
        horizon_s=days * DAY,
        failure_rate_per_host_s=llama3_rate_per_host_s(scale),
        record=record,
    )


def run(*args: Any, **kwargs: Any) -> Outcome:
    """Build and run an engine."""
    return engine(*args, **kwargs).run()
