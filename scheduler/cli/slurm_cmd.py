"""``firsthopctl slurm install|status``: set up firsthop's Slurm hooks; see a Slurm cluster.

- ``install --topology FILE --dir DIR [--server ADDR] [--state-dir PATH] ...`` writes the
  hooks, their configuration, ``topology.conf`` and the ``slurm.conf`` fragment
  (:mod:`agents.slurm.install`) and prints what to add to ``slurm.conf``.
- ``status --topology FILE`` reads ``sinfo`` and ``squeue`` and shows the Slurm cluster the
  way ``firsthopctl cluster status`` shows a firsthop one: free GPUs per domain,
  fragmentation per tier, how many jobs of common sizes fit per tier
  (:mod:`agents.slurm.status`).

Commands hold no logic. Exit codes: 0, 2 bad input, 1 Slurm unreachable. Must not import
``scheduler.core`` or ``scheduler.store``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from scheduler.cli.common import OutputFormat, OutputOption, print_result
from topology.errors import FirsthopError

EXIT_BAD_INPUT = 2
EXIT_SLURM = 1

app = typer.Typer(
    no_args_is_help=True,
    help="The Slurm plug-in: install the hooks; show a Slurm cluster by topology.",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


class FailMode(StrEnum):
    """What a firsthop outage does to a job."""

    OPEN = "open"
    CLOSED = "closed"


TopologyOption = Annotated[
    Path, typer.Option("--topology", "-t", help="The cluster's firsthop topology file.")
]


@app.command("install")
def install(
    topology: TopologyOption,
    directory: Annotated[Path, typer.Option("--dir", help="Where the plug-in's files go.")],
    server: Annotated[
        str | None,
        typer.Option(help="Publish rank tables to this scheduler (HOST:PORT), not a directory."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Rank tables (shared: every compute node reads it). Default DIR/state."),
    ] = None,
    local_dir: Annotated[
        Path, typer.Option(help="Node-local directory for each job's slice.")
    ] = Path("/run/firsthop-slurm"),
    slurm_conf: Annotated[Path, typer.Option(help="The slurm.conf hooks pass to scontrol.")] = Path(
        "/etc/slurm/slurm.conf"
    ),
    log_file: Annotated[
        Path | None, typer.Option(help="Hook log (default DIR/firsthop-slurm.log).")
    ] = None,
    fail_mode: Annotated[
        FailMode, typer.Option(help="On a firsthop outage: open (run anyway) or closed.")
    ] = FailMode.OPEN,
    scheduler_parameters: Annotated[
        str,
        typer.Option(help="The site's existing SchedulerParameters (the fragment replaces them)."),
    ] = "",
    epilog_check: Annotated[
        bool, typer.Option(help="Health-check nodes after each firsthop job.")
    ] = True,
    checkpoint_path: Annotated[
        Path, typer.Option(help="File system whose free space the health check watches.")
    ] = Path("/"),
    scontrol: Annotated[Path, typer.Option(help="Absolute path of scontrol.")] = Path(
        "/usr/bin/scontrol"
    ),
    cert: Annotated[
        Path | None,
        typer.Option(help="With --server: the hooks' certificate (`certs issue-slurm`)."),
    ] = None,
    key: Annotated[Path | None, typer.Option(help="The certificate's key.")] = None,
    ca: Annotated[
        Path | None, typer.Option(help="The cluster CA (checks the scheduler's certificate).")
    ] = None,
) -> None:
    """Write the hooks, their configuration, topology.conf and the slurm.conf fragment."""
    from agents.slurm.install import FRAGMENT_NAME, render, write, written

    try:
        plan = render(
            topology,
            directory,
            state_dir=state_dir,
            local_dir=local_dir,
            slurm_conf=slurm_conf,
            log_file=log_file,
            fail_mode=fail_mode.value,
            scheduler_parameters=scheduler_parameters,
            epilog_check=epilog_check,
            checkpoint_path=checkpoint_path,
            scontrol=scontrol,
            server=server,
            tls=(cert, key, ca),
        )
        write(plan, topology)
    except FirsthopError as exc:
        typer.echo(f"error: {exc.reason}: {exc.message}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        typer.echo(f"error: write_failed: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for path in written(plan):
        typer.echo(f"wrote {path}")
    typer.echo(
        f"add to slurm.conf: Include {plan.directory / FRAGMENT_NAME}\n"
        f"put {plan.directory / 'topology.conf'} next to slurm.conf, then restart slurmctld "
        "and slurmd"
    )


@app.command("status")
def status(
    topology: TopologyOption,
    slurm_conf: Annotated[
        Path | None, typer.Option(help="slurm.conf to query (default: Slurm's own).")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Free GPUs per domain, fragmentation per tier and jobs that fit, from sinfo/squeue."""
    from agents.slurm.status import SlurmQueryError, query_status

    try:
        data = query_status(topology, slurm_conf)
    except FirsthopError as exc:
        typer.echo(f"error: {exc.reason}: {exc.message}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except SlurmQueryError as exc:
        typer.echo(f"error: {exc.reason}: {exc}", err=True)
        raise typer.Exit(EXIT_SLURM) from None
    if output is OutputFormat.JSON:
        print_result(data, output)
        return
    Console().print(
        f"{data['nodes']} nodes, {data['gpus_total']} GPUs: {data['gpus_free']} free, "
        f"{data['gpus_allocated']} allocated, {data['gpus_out_of_service']} out of service "
        f"({', '.join(f'{k} {v}' for k, v in data['nodes_by_state'].items())}); "
        f"stranded: {data['stranded_gpus']} GPUs, {data['stranded_hosts']} hosts; "
        f"jobs: {', '.join(f'{k} {v}' for k, v in data['jobs_by_state'].items()) or 'none'}",
        highlight=False,
    )
    print_result(data["domains"], output, title="free GPUs per domain")
    print_result(data["tiers"], output, title="fragmentation per tier")
    print_result(data["fits"], output, title="jobs that would fit now, per tier")
