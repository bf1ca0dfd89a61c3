"""``firsthop-sim``: the simulator's console script.

``firsthop-sim run --topology FILE|GENERATOR:ARGS --workload SPEC --policy NAME[,NAME...]
[--failures none|llama3|FILE] [--days D] [--seed S] [--out DIR]`` runs every policy on the same
arrivals and failures and writes ``DIR/report.json``, ``DIR/report.md`` and PNG plots.

A policy label is ``NAME[:REPAIR]`` (``REPAIR``: ``queue``, the default, or ``in-place``):
``--policy firsthop:in-place,firsthop:queue`` compares the core's in-place repair (with
``--spares-per-leaf`` hosts of every leaf in the spare pool) against repair through the
queue on the same arrivals and failures.

``--topology`` takes a topology file (.yaml/.json) or a generator with its arguments, for
example ``fat-tree:pods=4,leaves-per-pod=8,hosts-per-leaf=16,oversubscription=4``.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from scheduler.cli.common import exit_on_error
from scheduler.sim.config import SimConfig
from scheduler.sim.engine import ProgressFn
from scheduler.sim.policies import parse_policies
from scheduler.sim.report import write_report
from scheduler.sim.simulate import DAY, Study, simulate
from topology.errors import InvalidInputError
from topology.generators import GENERATORS
from topology.index import TopologyIndex
from topology.model import Topology

app = typer.Typer(
    no_args_is_help=True,
    help="Trace-driven simulation of the firsthop scheduling core against baseline policies.",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Trace-driven simulation of the firsthop scheduling core."""


def load_topology(text: str) -> TopologyIndex:
    """A topology file, or ``GENERATOR:key=value,...`` (module docstring).

    Raises:
        InvalidInputError: ``invalid_topology_arg`` for a bad generator argument.
    """
    name, sep, args = text.partition(":")
    if sep and name in GENERATORS:
        kwargs: dict[str, int | float] = {}
        for term in filter(None, (t.strip() for t in args.split(","))):
            key, eq, value = term.partition("=")
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not eq or math.isnan(number):
                raise InvalidInputError(
                    f"topology argument {term!r}: expected key=number",
                    reason="invalid_topology_arg",
                )
            kwargs[key.strip().replace("-", "_")] = int(number) if number.is_integer() else number
        try:
            spec = GENERATORS[name](**kwargs)
        except TypeError as exc:
            raise InvalidInputError(
                f"topology {name}: {exc}", reason="invalid_topology_arg"
            ) from None
        return Topology.from_spec(spec).index
    return Topology.load(Path(text)).index


def _floats(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInputError(
            f"--sensitivity {text!r}: expected comma-separated numbers", reason="invalid_option"
        ) from None


@app.command()
def run(
    topology: Annotated[str, typer.Option("--topology", help="FILE or GENERATOR:ARGS.")],
    workload: Annotated[str, typer.Option("--workload", help="e.g. philly=0.9,llm=0.3")],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="NAME[:REPAIR],...: firsthop, slurm-tree, kueue-tas, first-fit; "
            "REPAIR queue (default) or in-place",
        ),
    ] = "firsthop",
    failures: Annotated[str, typer.Option("--failures", help="none, llama3 or a CSV")] = "none",
    days: Annotated[float, typer.Option("--days", min=0.001, help="Simulated days.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of workload and failures.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Report directory.")] = Path("sim-out"),
    config: Annotated[
        Path | None, typer.Option("--config", help="SimConfig as JSON (parameters).")
    ] = None,
    sensitivity: Annotated[
        str, typer.Option("--sensitivity", help="Other run.exposure values, or none.")
    ] = "none",
    checkpoint_interval: Annotated[
        float | None,
        typer.Option("--checkpoint-interval", min=1, help="Given cadence (s) for every job."),
    ] = None,
    spares_per_leaf: Annotated[
        int | None,
        typer.Option("--spares-per-leaf", min=0, help="Spare hosts per leaf in in-place runs."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Simulate POLICY(s) on the same arrivals and failures; write the report to OUT."""
    with exit_on_error():
        index = load_topology(topology)
        sim_config = SimConfig()
        if config is not None:
            try:
                sim_config = SimConfig.model_validate_json(config.read_text())
            except (OSError, ValueError) as exc:
                raise InvalidInputError(
                    f"--config {config}: {exc}".splitlines()[0], reason="invalid_config"
                ) from None
        if spares_per_leaf is not None:
            sim_config = sim_config.model_copy(update={"spares_per_leaf": spares_per_leaf})
        study = Study(
            index=index,
            topology=topology,
            workload=workload,
            policies=tuple(parse_policies(policy)),
            failures=failures,
            days=days,
            seed=seed,
            config=sim_config,
            sensitivity=_floats(sensitivity),
            checkpoint_interval_s=checkpoint_interval,
        )
        console = Console(stderr=True)
        with Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TextColumn("day {task.completed:.1f}/{task.total:.1f}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        ) as bar:

            def factory(label: str) -> ProgressFn:
                task = bar.add_task(label, total=days)

                def update(t: float) -> None:
                    bar.update(task, completed=t / DAY)

                return update

            report, outcomes = simulate(study, factory)
        files = write_report(out, report, outcomes)
        summary = {
            name: {k: p[k] for k in ("utilisation", "jct_mean_s", "jobs_finished")}
            for name, p in report["policies"].items()
        }
        typer.echo(json.dumps({"out": str(out), "files": [f.name for f in files], **summary}))


def main() -> None:
    """Console-script entry point of ``firsthop-sim``."""
    app(prog_name="firsthop-sim")
