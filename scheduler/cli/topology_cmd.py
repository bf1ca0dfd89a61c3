"""``firsthopctl topology``: generate, import, show and export cluster topologies.

Commands only parse options, call ``topology`` functions and print through
``scheduler.cli.common``; the topology logic lives in the ``topology`` package.

``show --server`` asks a live scheduler through :mod:`scheduler.cli.remote`.

Must not import ``scheduler.core``, ``scheduler.store``, ``agents`` or the generated protos.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from scheduler.cli.common import (
    ExitCode,
    OutputFormat,
    OutputOption,
    exit_on_error,
    print_result,
)
from scheduler.cli.options import current
from scheduler.cli.remote import connect
from topology.csv_import import import_hosts_csv
from topology.generators import dual_plane, fat_tree, rail_optimized
from topology.model import Topology
from topology.slurm import export_block, export_tree
from topology.spec import TopologySpec, dump_spec
from topology.summary import summarize

app = typer.Typer(
    no_args_is_help=True,
    help="Generate, import, show and export cluster topologies.",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)
generate_app = typer.Typer(
    no_args_is_help=True,
    help="Generate the topology of a common GPU fabric.",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)
app.add_typer(generate_app, name="generate")


OutOption = Annotated[Path, typer.Option("--out", help="File to write (.yaml or .json).")]
NameOption = Annotated[str | None, typer.Option("--name", help="Topology name.")]
GpusOption = Annotated[int, typer.Option("--gpus-per-host", help="GPUs per host.")]
TopologyArg = Annotated[Path, typer.Argument(help="Topology file (.yaml or .json).")]


def _write(spec: TopologySpec, out: Path) -> None:
    """Validate ``spec`` as a whole topology, write it, and say what was written."""
    topology = Topology.from_spec(spec)
    dump_spec(spec, out)
    typer.echo(
        f"wrote {out}: {len(topology.hosts):,} hosts, {topology.num_gpus:,} GPUs, "
        f"tiers {' > '.join(topology.level_names)}"
    )


@generate_app.command("fat-tree")
def generate_fat_tree(
    pods: Annotated[int, typer.Option("--pods", help="Pods (spine groups).")],
    leaves_per_pod: Annotated[int, typer.Option("--leaves-per-pod", help="Leaves per pod.")],
    hosts_per_leaf: Annotated[int, typer.Option("--hosts-per-leaf", help="Hosts per leaf.")],
    out: OutOption,
    gpus_per_host: GpusOption = 8,
    oversubscription: Annotated[
        float, typer.Option("--oversubscription", help="Spine-to-core oversubscription (x:1).")
    ] = 7.0,
    name: NameOption = None,
) -> None:
    """A pods x leaves x hosts fat tree, oversubscribed above the pods."""
    with exit_on_error():
        spec = fat_tree(
            pods,
            leaves_per_pod,
            hosts_per_leaf,
            gpus_per_host=gpus_per_host,
            oversubscription=oversubscription,
            name=name,
        )
        _write(spec, out)


@generate_app.command("rail-optimized")
def generate_rail_optimized(
    pods: Annotated[int, typer.Option("--pods", help="Pods (spine groups).")],
    groups_per_pod: Annotated[
        int, typer.Option("--groups-per-pod", help="Rail groups (scalable units) per pod.")
    ],
    out: OutOption,
    hosts_per_group: Annotated[
        int, typer.Option("--hosts-per-group", help="Hosts per rail group.")
    ] = 32,
    gpus_per_host: GpusOption = 8,
    oversubscription: Annotated[
        float, typer.Option("--oversubscription", help="Spine-to-core oversubscription (x:1).")
    ] = 1.0,
    name: NameOption = None,
) -> None:
    """Rail-optimized pods: GPU i of every host in a rail group is cabled to rail switch i."""
    with exit_on_error():
        spec = rail_optimized(
            pods,
            groups_per_pod,
            hosts_per_group=hosts_per_group,
            gpus_per_host=gpus_per_host,
            oversubscription=oversubscription,
            name=name,
        )
        _write(spec, out)


@generate_app.command("dual-plane")
def generate_dual_plane(
    pods: Annotated[int, typer.Option("--pods", help="Pods.")],
    out: OutOption,
    segments_per_pod: Annotated[
        int, typer.Option("--segments-per-pod", help="Segments (dual-ToR rail groups) per pod.")
    ] = 15,
    hosts_per_segment: Annotated[
        int, typer.Option("--hosts-per-segment", help="Hosts per segment.")
    ] = 128,
    gpus_per_host: GpusOption = 8,
    name: NameOption = None,
) -> None:
    """An HPN-like dual-plane fabric, modelled as one logical plane."""
    with exit_on_error():
        spec = dual_plane(
            pods,
            segments_per_pod=segments_per_pod,
            hosts_per_segment=hosts_per_segment,
            gpus_per_host=gpus_per_host,
            name=name,
        )
        _write(spec, out)


@app.command("import")
def import_csv(
    csv_file: Annotated[Path, typer.Argument(help="Hosts CSV: host[,gpus],leaf[,spine...].")],
    out: OutOption,
    name: NameOption = None,
) -> None:
    """Import a hosts CSV (nearest switch tier first) as a topology file."""
    with exit_on_error():
        spec = import_hosts_csv(csv_file, name=name)
        _write(spec, out)


@app.command("show")
def show(
    topology_file: Annotated[
        Path | None,
        typer.Argument(help="Topology file (.yaml or .json); omit with --server."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            "-s",
            help="Show the topology a live scheduler serves (HOST:PORT) instead of a file.",
        ),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
    tree: Annotated[bool, typer.Option("--tree", help="Draw the switch tree.")] = False,
    depth: Annotated[
        int, typer.Option("--depth", help="Levels of the tree to draw below the root.")
    ] = 2,
    width: Annotated[int, typer.Option("--width", help="Children drawn per node.")] = 8,
) -> None:
    """Summarise a topology tier by tier (or draw its tree with --tree).

    Give a topology file, or `--server HOST:PORT` for the one a running scheduler uses.
    """
    if server is None and topology_file is None:
        server = current().server  # firsthopctl --server X topology show
    if server is not None and topology_file is None:
        with connect(server) as client:
            topology = client.get_topology()
    elif topology_file is not None and server is None:
        with exit_on_error():
            topology = Topology.load(topology_file)
    else:
        typer.echo("error: usage: give a topology file or --server (not both)", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT)
    summary = summarize(topology)
    if output is OutputFormat.JSON:
        print_result(summary.to_dict(), output)
        return
    if tree:
        Console().print(_tree(topology, depth, width))
        return
    rows = [
        {
            "lvl": t.level,
            "tier": t.name,
            "domains": f"{t.domains:,}",
            "hosts": _span(t.hosts_min, t.hosts_max),
            "GPUs": _span(t.gpus_min, t.gpus_max),
            "GB/s/GPU": f"{t.bandwidth_gbytes_per_s:.3g}",
            "lat us": f"{t.latency_us:.3g}",
            "oversub": f"{t.oversubscription:.3g}:1",
            "notes": ", ".join(_notes(t.nvlink, t.rails, t.virtual_domains)),
        }
        for t in summary.tiers
    ]
    title = (
        f"{summary.name}: {summary.hosts:,} hosts, {summary.gpus:,} GPUs, "
        f"NVLink domain = {summary.nvlink_domain}"
    )
    print_result(rows, output, title=title)


class SlurmPlugin(StrEnum):
    """Slurm topology plugins firsthop can write a ``topology.conf`` for."""

    TREE = "tree"
    BLOCK = "block"


@app.command("export-slurm")
def export_slurm(
    topology_file: TopologyArg,
    plugin: Annotated[
        SlurmPlugin, typer.Option("--plugin", help="topology/tree or topology/block.")
    ] = SlurmPlugin.TREE,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of standard output.")
    ] = None,
    block_tier: Annotated[
        str | None,
        typer.Option("--block-tier", help="Tier whose domains are base blocks (block only)."),
    ] = None,
) -> None:
    """Write Slurm's topology.conf for this topology."""
    with exit_on_error():
        topology = Topology.load(topology_file)
        if plugin is SlurmPlugin.TREE:
            text = export_tree(topology)
        else:
            text = export_block(topology, block_tier=block_tier)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out} (topology/{plugin.value})")


def _span(low: int, high: int) -> str:
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def _notes(nvlink: bool, rails: int | None, virtual: int) -> list[str]:
    notes = []
    if nvlink:
        notes.append("NVLink")
    if rails:
        notes.append(f"{rails} rails")
    if virtual:
        notes.append(f"{virtual} virtual")
    return notes


def _tree(topology: Topology, depth: int, width: int) -> Tree:
    """A rich tree of the switch hierarchy, ``width`` children per node, ``depth`` levels."""
    index = topology.index
    root = Tree(f"[bold]{escape(topology.name)}[/] ({index.num_gpus:,} GPUs)")

    def label(name: str) -> str:
        domain = topology.domains[name]
        level = domain.level
        d = index.domain_id(level, name)
        hosts = int(index.hosts_per_domain(level)[d])
        gpus = int(index.gpus_per_domain(level)[d])
        return f"{escape(name)} [dim]{domain.tier}, {hosts:,} hosts, {gpus:,} GPUs[/]"

    def grow(node: Tree, names: list[str], hosts: tuple[str, ...], remaining: int) -> None:
        for name in names[:width]:
            child = node.add(label(name))
            if remaining > 1:
                domain = topology.domains[name]
                grow(child, list(domain.children), domain.hosts, remaining - 1)
        if len(names) > width:
            node.add(f"[dim]... {len(names) - width} more[/]")
        shown = escape(", ".join(hosts[:width]))
        if hosts:
            more = f" ... +{len(hosts) - width}" if len(hosts) > width else ""
            node.add(f"[dim]hosts:[/] {shown}{more}")

    roots = [d.name for d in topology.domains.values() if d.parent is None]
    top_hosts = tuple(h.name for h in topology.hosts.values() if h.parent is None)
    grow(root, roots, top_hosts, max(depth, 1))
    return root
