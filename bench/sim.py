"""Simulator benchmark: cluster-level comparison, goodput under failures, scale and profile.

Scenarios (each a ``firsthop-sim`` study on the production core; all policies of a scenario
run on the same arrivals and failures, so ratios are measured in the same run):

- ``cluster``: the Philly trace at offered load ``--load`` on a 4,096-GPU fat tree (4 pods x
  8 leaves x 16 hosts, 1:4 pod oversubscription), Llama 3 failure mix, ``firsthop`` against
  ``slurm-tree``, ``kueue-tas`` and ``first-fit``: utilisation, mean/p50/p99 JCT, wait,
  communication cost, cross-tier traffic, fragmentation.
- ``sensitivity``: the same study at the run-time model's ``exposure`` 0.25 and 1.0 (the
  cluster scenario is 0.5): mean JCT and utilisation per policy.
- ``goodput``: one TP8/PP16/DP128 job of 16,384 GPUs on 17,408 GPUs (8 pods x 16 leaves x 17
  hosts: one spare host per leaf, 1:7 like Meta's aggregation layer) at Llama 3 rates with
  the scheduler's Young/Daly cadence, repaired in place by the core (the last host of every
  leaf in the spare pool) and through the queue (the spare hosts open to the queue), both in
  one study on the same failures, over ``--goodput-days`` (54): at the default checkpoint
  costs (10 s saves, 120 s restarts) and at fast ones (2 s, 30 s); ETTR and where the
  job's time went.
- ``scale``: 16,384 GPUs (8 x 16 x 16) for 54 days, synthetic LLM jobs (64-16,384 GPUs) at
  load 0.8, Llama 3 failures, ``firsthop`` with the production settings: wall and CPU time
  (target < 600 s on the 2-core CI machine) and a cProfile breakdown (where the time goes);
  then the same with the Philly trace mixed in (load 0.05: ~3,000 small jobs a day) for
  ``--mix-days`` (off by default: its cost grows with the running jobs, see the report),
  profiled.

Run: ``python -m bench.sim [--scenarios cluster,goodput,scale]``; writes
``bench/results/sim.json`` (scenarios not run keep their previous results).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from typing import Any

from bench.common import RESULTS, write_results
from scheduler.sim.cli import load_topology
from scheduler.sim.config import CheckpointModel, SimConfig
from scheduler.sim.engine import ProgressFn
from scheduler.sim.metrics import policy_metrics
from scheduler.sim.simulate import DAY, Study, failure_schedule, run_policy, simulate, study_jobs

CLUSTER = "fat-tree:pods=4,leaves-per-pod=8,hosts-per-leaf=16,oversubscription=4"
SPARES = "fat-tree:pods=8,leaves-per-pod=16,hosts-per-leaf=17,oversubscription=7"
SCALE = "fat-tree:pods=8,leaves-per-pod=16,hosts-per-leaf=16,oversubscription=7"
POLICIES = ("firsthop", "slurm-tree", "kueue-tas", "first-fit")
KEEP = (
    "jobs_submitted",
    "jobs_finished",
    "utilisation",
    "jct_mean_s",
    "jct_p50_s",
    "jct_p99_s",
    "jct_by_size",
    "wait_mean_s",
    "slowdown_mean",
    "gpu_hours_lost",
    "gpu_hours_restart",
    "restarts",
    "comm_cost_mean",
    "comm_cost_ratio_to_ideal",
    "cross_tier_gb_mean",
    "largest_job_mean",
    "stranded_gpus_mean",
    "events",
    "cycles",
)


def cluster(days: float, load: float, seed: int) -> dict[str, Any]:
    """Philly on 4,096 GPUs: every policy in one run."""
    index = load_topology(CLUSTER)
    workload = f"philly={load:g}"
    study = Study(index, CLUSTER, workload, POLICIES, "llama3", days, seed)
    report, _ = simulate(study)
    return {
        "topology": CLUSTER,
        "workload": workload,
        "days": days,
        "seed": seed,
        "jobs": report["jobs"],
        "failure_events": report["failure_events"],
        "policies": {p: {k: m[k] for k in KEEP} for p, m in report["policies"].items()},
        "firsthop_over_baseline": report["ratios"],
        "wall_s": report["wall_s"],
        "cpu_s": report["cpu_s"],
    }


def sensitivity(days: float, load: float, seed: int) -> dict[str, Any]:
    """The cluster scenario's study re-run at ``exposure`` 0.25 and 1.0 (0.5 is the
    cluster scenario itself: same seed, same arrivals and failures)."""
    index = load_topology(CLUSTER)
    workload = f"philly={load:g}"
    base = Study(index, CLUSTER, workload, POLICIES, "llama3", days, seed)
    jobs = study_jobs(base)
    failures, rate = failure_schedule(base)
    out: dict[str, Any] = {"days": days, "workload": workload, "exposure": {}}
    for exposure in (0.25, 1.0):
        config = base.config.model_copy(
            update={"run": base.config.run.model_copy(update={"exposure": exposure})}
        )
        row: dict[str, Any] = {}
        for policy in POLICIES:
            outcome = run_policy(
                base, policy, jobs=jobs, failures=failures, rate=rate, config=config
            )
            m = policy_metrics(outcome, base.config.large_job_gpus, 120.0)
            row[policy] = {k: m[k] for k in ("utilisation", "jct_mean_s", "jct_by_size")}
        out["exposure"][f"{exposure:g}"] = row
    return out


REPAIR_MODES = ("firsthop:in-place", "firsthop:queue")


def goodput(days: float, seed: int) -> dict[str, Any]:
    """The 16,384-GPU job on 17,408 GPUs at Llama 3 rates, repaired in place (one spare
    host per leaf) and through the queue in the same study, at the default checkpoint costs
    and at fast ones."""
    index = load_topology(SPARES)
    out: dict[str, Any] = {"topology": SPARES, "days": days, "seed": seed, "runs": {}}
    base = SimConfig(spares_per_leaf=1, large_job_gpus=16384)
    fast = base.model_copy(update={"checkpoint": CheckpointModel(save_s=2.0, restart_s=30.0)})
    for label, config in (("young_daly", base), ("young_daly_fast_ckpt", fast)):
        study = Study(
            index, SPARES, "hero=16384", REPAIR_MODES, "llama3", days, seed, config=config
        )
        report, outcomes = simulate(study)
        row: dict[str, Any] = {
            "checkpoint_save_s": config.checkpoint.save_s,
            "restart_s": config.checkpoint.restart_s,
            "failures_injected": report["failure_events"],
            "wall_s": report["wall_s"],
            "cpu_s": report["cpu_s"],
        }
        for outcome in outcomes:
            metrics = report["policies"][outcome.policy]
            hero = outcome.jobs["hero"]
            held = [s.at_s / DAY for s in outcome.samples if s.allocated_gpus >= 16384]
            row[outcome.policy] = {
                "ettr": metrics["ettr"].get("hero"),
                "ettr_work": metrics["goodput"]["hero"]["ettr_work"],
                "time_share": metrics["goodput"]["hero"]["share"],
                "checkpoint_interval_s": metrics["goodput"]["hero"]["interval_s"],
                "repairs_in_place": metrics["repairs_in_place"],
                "repairs_through_queue": metrics["repairs_through_queue"],
                "restarts": hero.restarts,
                "spares": metrics["spares"],
                "hosts_excluded_at_end": len(hero.excluded_hosts),
                "state_at_end": hero.state.value,
                "last_day_running": max(held) if held else None,
                "gpu_hours_lost": metrics["gpu_hours_lost"],
                "gpu_hours_restart": metrics["gpu_hours_restart"],
            }
        out["runs"][label] = row
    return out


PROFILE_BUCKETS = {
    "placer (placement.place)": "placement/engine.py(place)",
    "CP-SAT level models": "placement/cpsat.py(solve_hierarchy)",
    "core handle (all)": "scheduler/core/scheduler.py(handle)",
    "core scheduling cycles": "scheduler/core/scheduler.py(_tick)",
    "core backfill reservation": "scheduler/core/backfill.py(find_reservation)",
    "engine run (all)": "scheduler/sim/engine.py(run)",
}


def _profiled(study: Study) -> tuple[dict[str, Any], dict[str, Any], list[float]]:
    """Run ``study`` under cProfile: its report, the time buckets, CPU seconds per day."""
    per_day: list[float] = []

    def factory(label: str) -> ProgressFn:
        del label

        def tick(t: float) -> None:
            while len(per_day) < int(t // DAY):
                per_day.append(round(time.process_time(), 1))

        return tick

    profiler = cProfile.Profile()
    profiler.enable()
    report, _ = simulate(study, factory)
    profiler.disable()
    table: dict[tuple[str, int, str], Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    cumulative: dict[str, float] = {}
    for (path, _line, func), (_, _, _, cum, _) in table.items():
        key = f"{path}({func})"
        for bucket, suffix in PROFILE_BUCKETS.items():
            if key.endswith(suffix):
                cumulative[bucket] = cumulative.get(bucket, 0.0) + cum
    run_s = cumulative.get("engine run (all)", 0.0) or 1.0
    shares = {b: round(cumulative.get(b, 0.0) / run_s, 3) for b in PROFILE_BUCKETS}
    top = sorted(table.items(), key=lambda kv: -kv[1][2])[:10]
    profile = {
        "share_of_engine_run": shares,
        "top_self_time": [
            {"function": f"{k[0].split('wt-sim/')[-1]}:{k[2]}", "self_s": round(v[2], 2)}
            for k, v in top
        ],
    }
    base = per_day[0] if per_day else 0.0
    return report, profile, [round(c - base, 1) for c in per_day]


def scale(days: float, mix_days: float, seed: int) -> dict[str, Any]:
    """16,384 GPUs for ``days`` with the Llama 3 mix (synthetic LLM jobs), production
    settings, profiled; then the LLM + Philly mix for ``mix_days`` (0: skip), profiled."""
    index = load_topology(SCALE)
    workload = "llm=0.8"
    study = Study(index, SCALE, workload, ("firsthop",), "llama3", days, seed)
    start = time.perf_counter()
    cpu = time.process_time()
    report, _ = simulate(study)
    wall, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    metrics = report["policies"]["firsthop"]
    _, profile, per_day = _profiled(study)
    out: dict[str, Any] = {
        "topology": SCALE,
        "gpus": index.num_gpus,
        "workload": workload,
        "days": days,
        "settings": "production (cycle every 30 s, CP-SAT for jobs above 8 hosts)",
        "wall_s": wall,
        "cpu_s": cpu_s,
        "target_s": 600.0,
        "jobs": report["jobs"],
        "jobs_finished": metrics["jobs_finished"],
        "failure_events": report["failure_events"],
        "restarts": metrics["restarts"],
        "events": metrics["events"],
        "cycles": metrics["cycles"],
        "utilisation": metrics["utilisation"],
        "comm_cost_ratio_to_ideal": metrics["comm_cost_ratio_to_ideal"],
        "profile": profile,
        "profile_cpu_s_by_day": per_day,
    }
    if mix_days > 0:
        mix = "llm=0.7,philly=0.05"
        mixed = Study(index, SCALE, mix, ("firsthop",), "llama3", mix_days, seed)
        mix_report, mix_profile, mix_per_day = _profiled(mixed)
        out["with_philly"] = {
            "workload": mix,
            "days": mix_days,
            "jobs": mix_report["jobs"],
            "cpu_s_profiled": mix_report["cpu_s"],
            "cpu_s_by_day_profiled": mix_per_day,
            "profile": mix_profile,
        }
    return out


def main() -> None:
    """Run the chosen scenarios and write ``bench/results/sim.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="cluster,sensitivity,goodput,scale")
    parser.add_argument("--cluster-days", type=float, default=2.0)
    parser.add_argument("--load", type=float, default=1.0)
    parser.add_argument("--goodput-days", type=float, default=54.0)
    parser.add_argument("--scale-days", type=float, default=54.0)
    parser.add_argument("--mix-days", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    results: dict[str, Any] = {}
    if "cluster" in chosen:
        results["cluster"] = cluster(args.cluster_days, args.load, args.seed)
        print(
            "cluster",
            {
                p: (round(m["utilisation"], 3), m["jct_mean_s"])
                for p, m in results["cluster"]["policies"].items()
            },
        )
    if "goodput" in chosen:
        results["goodput"] = goodput(args.goodput_days, args.seed)
        print("goodput", results["goodput"]["runs"])
    if "scale" in chosen:
        results["scale"] = scale(args.scale_days, args.mix_days, args.seed)
        print("scale", {k: results["scale"][k] for k in ("wall_s", "cpu_s", "events", "jobs")})
    if "sensitivity" in chosen:
        results["sensitivity"] = sensitivity(args.cluster_days, args.load, args.seed)
        print("sensitivity", results["sensitivity"]["exposure"])
    previous = RESULTS / "sim.json"
    merged: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    merged.pop("machine", None)
    merged.update(results)
    merged["config"] = SimConfig().model_dump(mode="json")
    path = write_results("sim", merged)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
