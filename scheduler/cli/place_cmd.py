"""``firsthopctl place``: an offline dry run of the placer (DESIGN.md, stable contract).

``firsthopctl place --topology FILE --job FILE [--busy FILE] --output json|table``

Exit codes: 0 placed, 3 unplaceable (the reason and its counts are printed), 2 bad input (one
``error: <reason>: <message>`` line on stderr, no traceback). The JSON holds ``status``
(``placed`` / ``unplaceable``), ``reason``, ``ranks`` (``[{rank, host, gpu}]``), ``cost`` and
``lower_bound`` (milliseconds of communication per training step), ``solve_seconds`` and
``groups_spanning`` (per dimension, the number of groups whose highest tier is each tier),
plus explanation keys (``gap``, ``ratio``, ``domains``, ``fragmentation``...).

``lower_bound`` bounds the cost of *every* placement of the job on this snapshot, so ``gap``
(``1 - lower_bound / cost``) is a proven optimality gap: no placement is cheaper than
``cost * (1 - gap)``. The CP-SAT figures under ``solver`` (``count_model_objective``,
``count_model_bound``) are about the count model the solver optimises (whole blocks per
domain), not about the cost, and may lie on either side of it.

The command only parses files, calls :func:`placement.place` and prints; the lead registers it
with ``app.command("place")(place)``.

Must not import ``scheduler.core``, ``scheduler.store``, ``agents`` or the generated protos.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from placement import (
    Placement,
    PlacementFailure,
    PlacementParams,
    Snapshot,
)
from placement import place as place_job
from scheduler.cli.common import ExitCode, OutputFormat, OutputOption, exit_on_error
from scheduler.jobspec_file import load_job_spec
from topology.errors import InvalidInputError, UnknownHostError
from topology.index import TopologyIndex
from topology.model import Topology

EXIT_UNPLACEABLE: Final = ExitCode.NOT_FOUND
"""No placement exists for the job (the shared table's "not found, or no room")."""
"""Exit code when the job is valid but does not fit the cluster as given."""

RANKS_SHOWN = 16
"""Rank-table rows the table output prints (the JSON has all of them)."""


def place(
    topology: Annotated[
        Path, typer.Option("--topology", help="Topology file (YAML or JSON).", show_default=False)
    ],
    job: Annotated[
        Path, typer.Option("--job", help="Job spec file (YAML or JSON).", show_default=False)
    ],
    busy: Annotated[
        Path | None,
        typer.Option("--busy", help="Unavailable capacity: one `host` or `host:gpu` per line."),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.01, help="Solver budget in seconds.")
    ] = PlacementParams().time_limit_s,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Solver random seed.")] = 0,
) -> None:
    """Show where a job's ranks would run on a cluster now, and what crosses which tier."""
    with exit_on_error():
        topo = Topology.load(topology)
        spec = load_job_spec(job)
        entries = _read_busy(busy) if busy is not None else []
        try:
            snapshot = Snapshot.build(topo.index, entries)
        except UnknownHostError as exc:  # a typo in a local file: bad input, not "not found"
            raise InvalidInputError(f"{busy}: {exc.message}", reason=exc.reason) from None
        params = PlacementParams(time_limit_s=time_limit, random_seed=seed)
        result = place_job(snapshot, spec.to_request(), params)
    data = result_to_dict(result, topo.index, job=spec.name)
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(data, indent=1))
    else:
        _print_tables(result, data, topo.index)
    if isinstance(result, PlacementFailure):
        raise typer.Exit(EXIT_UNPLACEABLE)


def _read_busy(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInputError(f"cannot read {path}: {detail}", reason="unreadable_file") from None


def result_to_dict(
    result: Placement | PlacementFailure, index: TopologyIndex, *, job: str
) -> dict[str, Any]:
    """The JSON document of ``firsthopctl place`` (keys in the module docstring)."""
    if isinstance(result, PlacementFailure):
        return {
            "status": "unplaceable",
            "job": job,
            "reason": result.reason.value,
            "message": result.message,
            "counts": result.counts,
            "ranks": [],
            "cost": None,
            "lower_bound": None,
            "solve_seconds": round(result.solve_seconds, 6),
            "groups_spanning": {},
        }
    bound = result.lower_bound
    solver = result.solver
    return {
        "status": "placed",
        "job": job,
        "reason": None,
        "gpus": len(result.ranks),
        "gpus_per_host": result.gpus_per_host,
        "ranks": result.ranks.rows(index),
        "cost": _ms(result.cost_ms),
        "cost_units": "ms of communication per training step",
        "lower_bound": _ms(bound.total_ms),
        "gap": round(result.gap, 6),
        "ratio": round(result.ratio, 6),
        "solve_seconds": round(result.solve_seconds, 6),
        "groups_spanning": result.spans,
        "cost_by_dim": {d: _ms(v) for d, v in result.cost_by_dim_ms.items()},
        "lower_bound_detail": {
            "by_dim": {d: _ms(v) for d, v in bound.by_dim_ms.items()},
            "joint": _ms(bound.joint_ms),
            "forced_crossings": bound.forced_crossings,
            "min_domains": bound.min_domains,
            "ideal": _ms(bound.ideal_ms),
        },
        "hosts": [index.host_names[h] for h in result.hosts.tolist()],
        "domains": result.domains,
        "method": result.method,
        "layout": list(result.layout),
        "candidates": {k: _ms(v) for k, v in result.candidates.items()},
        "solver": {
            "status": solver.status,
            "count_model_objective": (
                _ms(solver.objective_ms) if solver.objective_ms is not None else None
            ),
            "count_model_bound": _ms(solver.bound_ms) if solver.bound_ms is not None else None,
            "models": [
                {
                    "parent": m.parent,
                    "children": m.children,
                    "status": m.status.value,
                    "wall_s": round(m.wall_s, 6),
                }
                for m in solver.models
            ],
        },
        "fragmentation": {
            "before": dataclasses.asdict(result.fragmentation_before),
            "after": dataclasses.asdict(result.fragmentation_after),
        },
    }


def _ms(value: float) -> float:
    return round(value, 4)


# ---------------------------------------------------------------------------- table output


def _print_tables(
    result: Placement | PlacementFailure, data: dict[str, Any], index: TopologyIndex
) -> None:
    console = Console()
    if isinstance(result, PlacementFailure):
        console.print(Text(f"{data['job']}: unplaceable: {result.reason.value}", style="bold red"))
        console.print(Text(result.message))
        counts = Table("count", "value", title="why")
        for key, value in result.counts.items():
            counts.add_row(key, str(value))
        console.print(counts)
        return
    hosts = len(result.hosts)
    console.print(
        Text(
            f"{data['job']}: {len(result.ranks)} GPUs on {hosts} host(s), "
            f"method {result.method}, layout {'-'.join(result.layout) or 'one host'}, "
            f"{result.solve_seconds:.3f} s",
            style="bold",
        )
    )
    console.print(_cost_table(result))
    console.print(_span_table(result))
    console.print(_domain_table(result, index))
    console.print(_fragmentation_table(result))
    ranks = Table("rank", "host", "gpu", title=f"rank table (first {RANKS_SHOWN})")
    for row in data["ranks"][:RANKS_SHOWN]:
        ranks.add_row(str(row["rank"]), Text(row["host"]), str(row["gpu"]))
    console.print(ranks)


def _cost_table(result: Placement) -> Table:
    bound = result.lower_bound
    table = Table("", "cost (ms/step)", "lower bound", title="cost against the bound")
    for dim, cost in result.cost_by_dim_ms.items():
        table.add_row(dim, f"{cost:.1f}", f"{bound.by_dim_ms.get(dim, 0.0):.1f}")
    if bound.joint_ms > 0.05:
        table.add_row("(dims that conflict)", "", f"+{bound.joint_ms:.1f}")
    table.add_row(Text("total", style="bold"), f"{result.cost_ms:.1f}", f"{bound.total_ms:.1f}")
    table.caption = f"cost / lower bound = {result.ratio:.3f} (proven gap {result.gap:.1%}); "
    table.caption += "ideal (empty cluster) bound "
    table.caption += f"{bound.ideal_ms:.1f} ms"
    if result.proven_bound_ms is not None:
        table.caption += f"; CP-SAT bound on the count model {result.proven_bound_ms:.1f} ms"
    return table


def _span_table(result: Placement) -> Table:
    tiers = list(next(iter(result.spans.values()), {}))
    table = Table("dimension", *tiers, title="groups whose highest tier is ...")
    for dim, counts in result.spans.items():
        table.add_row(dim, *(str(counts[t]) if counts[t] else "." for t in tiers))
    return table


def _domain_table(result: Placement, index: TopologyIndex) -> Table:
    """Per domain of the highest switch tier used: hosts taken and lower domains touched."""
    top = index.cluster_level - 1
    if top < 1:
        return Table(title="chosen domains: none (no switch tiers)")
    names = index.level_names
    lower = range(1, top)
    table = Table(
        names[top], "hosts", *(f"{names[lv]} domains" for lv in lower), title="chosen domains"
    )
    rows = index.ancestors[result.hosts]
    for domain in dict.fromkeys(rows[:, top].tolist()):
        mine = rows[rows[:, top] == domain]
        inner = [str(len(set(mine[:, lv].tolist()))) for lv in lower]
        table.add_row(Text(index.domain_names[top][domain]), str(len(mine)), *inner)
    return table


def _fragmentation_table(result: Placement) -> Table:
    before, after = result.fragmentation_before, result.fragmentation_after
    table = Table("metric", "before", "after", title="free capacity left behind")
    table.add_row("free GPUs", str(before.free_gpus), str(after.free_gpus))
    table.add_row(
        "stranded GPUs (partly busy hosts)", str(before.stranded_gpus), str(after.stranded_gpus)
    )
    table.add_row(
        "stranded hosts (thin leaves)", str(before.stranded_hosts), str(after.stranded_hosts)
    )
    for tier, value in before.largest_job.items():
        table.add_row(f"largest job in one {tier}", str(value), str(after.largest_job[tier]))
    for tier, value in before.whole_free_domains.items():
        table.add_row(f"whole free {tier} domains", str(value), str(after.whole_free_domains[tier]))
    return table
