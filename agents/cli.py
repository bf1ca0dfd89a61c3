"""``firsthop-agent``: the node agent; today its ``simulate`` command runs a simulated cluster.

``firsthop-agent simulate --server ADDR --topology FILE [--hosts N] [--exec]`` runs one
simulated agent per host of the topology (the first N hosts with ``--hosts``) in this process,
through the same AgentService contract the real per-host agent (next issue) will use. Ranks
run as simulated work of ``FIRSTHOP_SIM_DURATION_S`` seconds (from the job's env; default
``--duration``), or as real local processes with ``--exec``. It prints
``simulating N agents against ADDR`` and, once every agent is connected,
``connected N agents`` (both flushed), then runs until SIGTERM or SIGINT.

Must not import ``scheduler`` (enforced by import-linter): the agent reaches the scheduler only
over gRPC, so it cannot use ``scheduler.cli.common`` either.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from agents.ranks import ProcessExecutor, RankExecutor, SimulatedExecutor
from agents.simulate import SimulatedCluster, identities
from topology.errors import FirsthopError
from topology.model import Topology

EXIT_BAD_INPUT = 2

app = typer.Typer(
    name="firsthop-agent",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Run the firsthop node agent.

    `simulate` runs one simulated agent per host of a topology in this process (fake GPUs,
    real gRPC). The real per-host agent (health probes, rank supervision, maintenance
    actions) comes next.
    """


@app.command("simulate")
def simulate(
    server: Annotated[str, typer.Option("--server", "-s", help="Scheduler HOST:PORT.")],
    topology_file: Annotated[
        Path, typer.Option("--topology", "-t", help="The cluster's topology file.")
    ],
    hosts: Annotated[
        int | None, typer.Option("--hosts", min=1, help="Simulate only the first N hosts.")
    ] = None,
    run_exec: Annotated[
        bool, typer.Option("--exec", help="Run ranks as real local processes (the job's argv).")
    ] = False,
    duration: Annotated[
        float,
        typer.Option(
            min=0.0, help="Seconds a simulated rank runs when the job's env does not say."
        ),
    ] = 60.0,
    log_dir: Annotated[
        Path | None, typer.Option(help="Where --exec ranks write their output.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the heartbeat jitter.")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
) -> None:
    """Run simulated agents for the hosts of a topology until SIGTERM."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        topology = Topology.load(topology_file)
    except FirsthopError as exc:
        typer.echo(f"error: {exc.reason}: {exc.message}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    executor: RankExecutor
    if run_exec:
        logs = log_dir or Path(tempfile.mkdtemp(prefix="firsthop-ranks-"))
        executor = ProcessExecutor(logs)
    else:
        executor = SimulatedExecutor(default_duration_s=duration)
    agents = identities(topology, hosts)
    cluster = SimulatedCluster(server, agents, executor, seed=seed)
    failed = asyncio.run(_serve(cluster, len(agents)))
    if failed:
        for host, why in sorted(failed.items())[:10]:
            typer.echo(f"error: agent {host}: {why}", err=True)
        raise typer.Exit(1)


async def _serve(cluster: SimulatedCluster, count: int) -> dict[str, str]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"simulating {count} agents against {cluster.server}", flush=True)
    runner = asyncio.create_task(cluster.run(stop))
    announce = asyncio.create_task(_announce(cluster, count))
    await runner
    announce.cancel()
    return cluster.failed


async def _announce(cluster: SimulatedCluster, count: int) -> None:
    await cluster.wait_connected()
    if cluster.connected >= count:
        print(f"connected {count} agents", flush=True)
    else:
        print(f"connected {cluster.connected} of {count} agents", file=sys.stderr, flush=True)


def main() -> None:
    """Console-script entry point of ``firsthop-agent``."""
    app(prog_name="firsthop-agent")
