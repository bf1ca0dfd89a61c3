"""Workloads: real traces scaled to the target cluster, synthetic LLM jobs, and mixes.

A workload spec is a comma-separated list of ``NAME=VALUE`` terms:

- ``philly=LOAD``: the Philly trace (``data/traces/philly_2017_pollux.csv.gz``), from day 14
  (the first two weeks are nearly empty), with arrivals sped up or slowed down so that the
  offered load (GPU-seconds submitted per second) is ``LOAD`` times the cluster's GPUs. The
  trace repeats if the horizon outlasts it. Sizes above 8 GPUs that are not a multiple of 8
  (7 jobs of 12 GPUs) are rounded up to whole hosts.
- ``openb=LOAD``: the Alibaba openb pods the same way (shared GPUs count as one GPU).
- ``llm=LOAD``: synthetic LLM training jobs, Poisson arrivals, sizes 64 to 16,384 GPUs
  (powers of two, smaller ones more frequent, at most the cluster), TP8 with PP and DP grown
  with size (Megatron order ``tp-cp-ep-dp-pp``), run times log-uniform from 1 to 21 days.
- ``hero=GPUS``: one job of ``GPUS`` GPUs submitted at time 0 that runs past the horizon
  (TP8/PP16/DP``GPUS/128``, the Llama 3 405B shape at 16,384 GPUs).

The trace's duration is the job's run time at an ideal placement
(:mod:`scheduler.sim.runmodel` turns it into simulated run time).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from placement import Parallelism
from scheduler.jobspec import JobSpec
from topology.errors import InvalidInputError

DAY = 86400.0
TRACE_DIR = Path(__file__).resolve().parents[2] / "data" / "traces"
TRACES = {"philly": "philly_2017_pollux.csv.gz", "openb": "alibaba_openb_2023.csv.gz"}
TRACE_START_S = {"philly": 21 * DAY, "openb": 0.0}
LLM_SIZES = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
LLM_WEIGHTS = (0.30, 0.22, 0.16, 0.12, 0.08, 0.05, 0.04, 0.02, 0.01)
LLM_MIN_DAYS, LLM_MAX_DAYS = 1.0, 21.0
MAX_RESTARTS = 10_000


@dataclass(frozen=True, slots=True)
class SimJob:
    """One job of a workload.

    Attributes:
        id: job id (unique in the workload).
        submit_s: submission time (seconds from the start of the run).
        work_s: run time at an ideal placement, without interruptions or checkpoints.
        spec: the job spec submitted to the scheduler.
        source: ``philly``, ``openb``, ``llm`` or ``hero``.
        checkpoint_interval_s: cadence given by the user; ``None``: the scheduler chooses.
    """

    id: str
    submit_s: float
    work_s: float
    spec: JobSpec
    source: str
    checkpoint_interval_s: float | None = None

    @property
    def gpus(self) -> int:
        """GPUs the job needs."""
        return self.spec.gpus


def parse_spec(text: str) -> dict[str, float]:
    """``NAME=VALUE,...`` -> ``{NAME: VALUE}``.

    Raises:
        InvalidInputError: ``invalid_workload`` for an unknown name or a bad value.
    """
    terms: dict[str, float] = {}
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        name, sep, value = term.partition("=")
        name = name.strip()
        if not sep or name not in (*TRACES, "llm", "hero"):
            raise InvalidInputError(
                f"workload term {term!r}: expected NAME=VALUE with NAME one of philly, openb, "
                "llm, hero",
                reason="invalid_workload",
            )
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not number > 0 or not math.isfinite(number):
            raise InvalidInputError(
                f"workload term {term!r}: the value must be a positive number",
                reason="invalid_workload",
            )
        terms[name] = number
    if not terms:
        raise InvalidInputError("the workload spec is empty", reason="invalid_workload")
    return terms


def build_workload(
    text: str,
    *,
    cluster_gpus: int,
    horizon_s: float,
    seed: int,
    trace_dir: Path = TRACE_DIR,
) -> list[SimJob]:
    """The jobs of workload ``text`` on a cluster of ``cluster_gpus`` GPUs, by submit time."""
    terms = parse_spec(text)
    streams = np.random.SeedSequence(seed).spawn(4)
    jobs: list[SimJob] = []
    for name, value in sorted(terms.items()):
        if name in TRACES:
            jobs += trace_jobs(name, value, cluster_gpus, horizon_s, trace_dir)
        elif name == "llm":
            rng = np.random.default_rng(streams[0])
            jobs += llm_jobs(value, cluster_gpus, horizon_s, rng)
        else:
            jobs.append(hero_job(int(value), horizon_s, cluster_gpus))
    jobs.sort(key=lambda j: (j.submit_s, j.id))
    return jobs


def _read_trace(path: Path) -> list[tuple[float, float, int]]:
    try:
        with gzip.open(path, "rt", newline="") as fh:
            rows = [
                (float(r["submit_time_s"]), float(r["duration_s"]), int(r["num_gpus"]))
                for r in csv.DictReader(fh)
            ]
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot read trace {path}: {exc}", reason="unreadable_file"
        ) from None
    return rows


def trace_jobs(
    name: str, load: float, cluster_gpus: int, horizon_s: float, trace_dir: Path = TRACE_DIR
) -> list[SimJob]:
    """Jobs of trace ``name`` at offered load ``load`` (module docstring)."""
    start = TRACE_START_S[name]
    rows = [
        (s - start, d, _whole_hosts(g))
        for s, d, g in _read_trace(trace_dir / TRACES[name])
        if s >= start and d > 0
    ]
    rows = sorted(r for r in rows if r[2] <= cluster_gpus)
    if not rows:
        return []
    span = max(r[0] for r in rows) + 1.0
    demand = sum(d * g for _, d, g in rows) / span
    factor = load * cluster_gpus / demand
    period = span / factor
    out: list[SimJob] = []
    specs: dict[int, JobSpec] = {}
    rounds = math.ceil(horizon_s / period)
    for k in range(rounds):
        for i, (submit, duration, gpus) in enumerate(rows):
            at = k * period + submit / factor
            if at >= horizon_s:
                break
            spec = specs.get(gpus)
            if spec is None:
                spec = specs[gpus] = _spec(f"{name}-{gpus}gpu", gpus)
            out.append(SimJob(f"{name}-{k}-{i:06d}", at, duration, spec, name))
    return out


def _whole_hosts(gpus: int) -> int:
    return gpus if gpus <= 8 else -(-gpus // 8) * 8


def _spec(job_id: str, gpus: int, par: Parallelism | None = None, **fields: object) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": job_id,
            "gpus": gpus,
            "parallelism": par,
            "max_restarts": MAX_RESTARTS,
            "checkpoint": {},  # every simulated job checkpoints (at the engine's cadence)
            **fields,
        }
    )


def llm_shape(gpus: int) -> Parallelism:
    """TP8 with pipeline depth grown with size (PP1 to 64 GPUs, PP4 to 1,024, then PP16)."""
    pp = 1 if gpus <= 64 else 4 if gpus <= 1024 else 16
    return Parallelism(tp=8, pp=pp, dp=gpus // (8 * pp))


def llm_jobs(
    load: float, cluster_gpus: int, horizon_s: float, rng: np.random.Generator
) -> list[SimJob]:
    """Poisson arrivals of synthetic LLM jobs at offered load ``load`` (module docstring)."""
    sizes = [s for s in LLM_SIZES if s <= cluster_gpus]
    if not sizes:
        return []
    weights = np.array(LLM_WEIGHTS[: len(sizes)])
    weights /= weights.sum()
    lo, hi = math.log(LLM_MIN_DAYS * DAY), math.log(LLM_MAX_DAYS * DAY)
    mean_duration = (math.exp(hi) - math.exp(lo)) / (hi - lo)
    mean_gpus = float(np.dot(weights, sizes))
    rate = load * cluster_gpus / (mean_gpus * mean_duration)
    out: list[SimJob] = []
    at = 0.0
    while True:
        at += float(rng.exponential(1.0 / rate))
        if at >= horizon_s:
            return out
        gpus = int(rng.choice(sizes, p=weights))
        work = math.exp(float(rng.uniform(lo, hi)))
        job_id = f"llm-{len(out):05d}"
        out.append(SimJob(job_id, at, work, _spec(job_id, gpus, llm_shape(gpus)), "llm"))


def hero_job(gpus: int, horizon_s: float, cluster_gpus: int) -> SimJob:
    """One job that holds ``gpus`` GPUs for longer than the horizon."""
    if gpus > cluster_gpus or gpus % 128:
        raise InvalidInputError(
            f"hero={gpus}: needs a multiple of 128 GPUs (TP8 x PP16) within the cluster's "
            f"{cluster_gpus}",
            reason="invalid_workload",
        )
    par = Parallelism(tp=8, pp=16, dp=gpus // 128)
    return SimJob("hero", 0.0, 10 * horizon_s + DAY, _spec("hero", gpus, par), "hero")
