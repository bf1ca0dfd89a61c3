"""Writing a run's results: ``report.json``, ``report.md`` and matplotlib PNG plots.

Plots: utilisation over time, queue length over time, JCT distribution per size class,
fragmentation (largest placeable job) per tier over time, ETTR per large job.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from scheduler.core.states import JobState
from scheduler.sim.engine import Outcome
from scheduler.sim.metrics import size_class

PLOTS = ("utilisation.png", "queue.png", "jct.png", "fragmentation.png", "ettr.png")


def write_report(out: Path, report: dict[str, Any], outcomes: list[Outcome]) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``out``; return the files."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json", out / "report.md"]
    files[0].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    files[1].write_text(markdown(report))
    files += plot_all(out, outcomes, report)
    return files


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    lines = [
        f"# firsthop-sim report (seed {report['seed']}, {report['days']:g} days, "
        f"{report['gpus']} GPUs)",
        "",
        f"Topology: {report['topology']}; workload: `{report['workload']}`; failures: "
        f"`{report['failures']}` ({report['failure_events']} events); wall time "
        f"{report['wall_s']:.1f} s (CPU {report.get('cpu_s', 0.0):.1f} s).",
        "",
        "## Policies",
        "",
    ]
    keys = [
        "jobs_submitted",
        "jobs_finished",
        "utilisation",
        "jct_mean_s",
        "jct_p50_s",
        "jct_p99_s",
        "wait_mean_s",
        "slowdown_mean",
        "gpu_hours_lost",
        "gpu_hours_restart",
        "restarts",
        "repairs_in_place",
        "repairs_through_queue",
        "spares",
        "comm_cost_mean",
        "comm_cost_ratio_to_ideal",
        "cross_tier_gb_mean",
        "stranded_gpus_mean",
    ]
    policies = report["policies"]
    names = list(policies)
    lines.append("| metric | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(policies[n].get(key)) for n in names) + " |")
    for tier in sorted({t for n in names for t in policies[n]["largest_job_mean"]}):
        row = [_fmt(policies[n]["largest_job_mean"].get(tier)) for n in names]
        lines.append(f"| largest job in one {tier} (mean GPUs) | " + " | ".join(row) + " |")
    ref = report.get("reference")
    if ref and report.get("ratios"):
        lines += ["", f"## {ref} / baseline (same run; < 1 is better for all but utilisation)", ""]
        cols = list(next(iter(report["ratios"].values())))
        lines.append("| baseline | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for base, row in report["ratios"].items():
            lines.append(f"| {base} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    lines += ["", "## JCT by size class (mean s / p99 s / finished)", ""]
    classes = sorted({c for n in names for c in policies[n]["jct_by_size"]}, key=_class_key)
    lines.append("| class | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for c in classes:
        cells = []
        for n in names:
            s = policies[n]["jct_by_size"].get(c)
            cells.append(
                "-" if not s or not s["n"] else f"{_fmt(s['mean'])} / {_fmt(s['p99'])} / {s['n']}"
            )
        lines.append(f"| {c} GPUs | " + " | ".join(cells) + " |")
    if report.get("sensitivity"):
        lines += ["", "## Sensitivity to `run.exposure` (mean JCT s / utilisation)", ""]
        lines.append("| exposure | " + " | ".join(names) + " |")
        lines.append("|---:|" + "---:|" * len(names))
        for exposure, row in report["sensitivity"].items():
            cells = [
                f"{_fmt(row[n]['jct_mean_s'])} / {_fmt(row[n]['utilisation'])}" if n in row else "-"
                for n in names
            ]
            lines.append(f"| {exposure} | " + " | ".join(cells) + " |")
    ettr_rows = [(n, j, v) for n in names for j, v in policies[n]["ettr"].items()]
    if ettr_rows:
        lines += ["", "## ETTR of large jobs", "", "| policy | job | ETTR |", "|---|---|---:|"]
        lines += [f"| {n} | {j} | {v:.4f} |" for n, j, v in ettr_rows[:60]]
    goodput_rows = [(n, j, g) for n in names for j, g in policies[n].get("goodput", {}).items()]
    if goodput_rows:
        parts = ("useful_s", "checkpoint_s", "lost_s", "restarting_s", "stopping_s", "queued_s")
        lines += [
            "",
            "## Where a large job's time went (share of wall time since its first start)",
            "",
            "| policy | job | ETTR (work) | " + " | ".join(c[:-2] for c in parts) + " |",
            "|---|---|---:|" + "---:|" * len(parts),
        ]
        for n, j, g in goodput_rows[:60]:
            share = g.get("share", {})
            cells = [_fmt(share.get(c), 4) for c in parts]
            lines.append(
                f"| {n} | {j} | {_fmt(g.get('ettr_work'), 4)} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(report["config"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _class_key(name: str) -> int:
    return int(name.split("-", maxsplit=1)[0].rstrip("+"))


def plot_all(out: Path, outcomes: list[Outcome], report: dict[str, Any]) -> list[Path]:
    """The five plots (module docstring)."""
    paths = [out / name for name in PLOTS]
    _series(paths[0], outcomes, "utilisation", lambda o, s: s.allocated_gpus / o.gpus)
    _series(paths[1], outcomes, "queued jobs", lambda o, s: float(s.queued_jobs))
    _jct(paths[2], outcomes)
    _fragmentation(paths[3], outcomes)
    _ettr(paths[4], report)
    return paths


def _series(path: Path, outcomes: list[Outcome], label: str, value: Any) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for o in outcomes:
        xs = [s.at_s / 86400 for s in o.samples]
        ax.plot(xs, [value(o, s) for s in o.samples], label=o.policy, linewidth=1)
    ax.set_xlabel("day")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _jct(path: Path, outcomes: list[Outcome]) -> None:
    per: dict[str, dict[str, list[float]]] = {}
    for o in outcomes:
        for job in o.jobs.values():
            if job.state is JobState.SUCCEEDED and job.finished_at is not None:
                t = (job.finished_at - job.submitted_at).total_seconds()
                per.setdefault(size_class(job.gpus), {}).setdefault(o.policy, []).append(t)
    classes = sorted(per, key=_class_key) or ["1"]
    fig, axes = plt.subplots(1, len(classes), figsize=(3.2 * len(classes), 3.2), squeeze=False)
    for ax, c in zip(axes[0], classes, strict=True):
        for policy, values in per.get(c, {}).items():
            xs = np.sort(np.asarray(values)) / 3600
            ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=policy, linewidth=1)
        ax.set_xscale("log")
        ax.set_title(f"{c} GPUs")
        ax.set_xlabel("JCT (h)")
    axes[0][0].set_ylabel("CDF")
    if per:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fragmentation(path: Path, outcomes: list[Outcome]) -> None:
    tiers = sorted({t for o in outcomes for s in o.samples for t in s.largest_job})
    tiers = tiers or ["cluster"]
    fig, axes = plt.subplots(1, len(tiers), figsize=(3.2 * len(tiers), 3.2), squeeze=False)
    for ax, tier in zip(axes[0], tiers, strict=True):
        for o in outcomes:
            xs = [s.at_s / 86400 for s in o.samples]
            ax.plot(xs, [s.largest_job.get(tier, 0) for s in o.samples], label=o.policy, lw=1)
        ax.set_title(f"largest job in one {tier}")
        ax.set_xlabel("day")
    axes[0][0].set_ylabel("GPUs")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ettr(path: Path, report: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    policies = report["policies"]
    width = 0.8 / max(1, len(policies))
    jobs = sorted({j for p in policies.values() for j in p["ettr"]})[:40]
    for k, (name, p) in enumerate(policies.items()):
        xs = np.arange(len(jobs)) + k * width
        ax.bar(xs, [p["ettr"].get(j, 0.0) for j in jobs], width=width, label=name)
    ax.set_xticks(np.arange(len(jobs)) + 0.4 - width / 2)
    ax.set_xticklabels(jobs, rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("ETTR")
    if jobs:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no large jobs ran", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
