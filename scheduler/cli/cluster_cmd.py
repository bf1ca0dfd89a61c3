"""``firsthopctl nodes|jobs|queues|cluster``: operate a live scheduler.

- ``nodes list|show|drain|resume``: node states, health and what runs where;
- ``jobs list``: every user's jobs;
- ``queues list|set``: queues with priority, weight and GPU quota;
- ``cluster status``: utilisation and fragmentation per tier, queue depths, the largest job
  placeable per tier, and how many jobs of common sizes would fit;
- ``cluster forecast``: when each waiting job is expected to start (the scheduler simulates
  its live state forward: like ``squeue --start``, with firsthop's placement and backfill).

Exit codes are those of :mod:`scheduler.cli.remote`. Must not import ``scheduler.core``
internals, ``scheduler.store``, ``placement`` or the generated protos.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from scheduler.cli.common import OutputFormat, OutputOption, print_result
from scheduler.cli.remote import (
    DEFAULT,
    QueueFilter,
    ServerOption,
    StateFilter,
    UserFilter,
    connect,
    print_job_list,
)
from scheduler.cli.views import (
    ADMIN_JOB_COLUMNS,
    NODE_COLUMNS,
    QUEUE_COLUMNS,
    cluster_dict,
    node_dict,
    node_row,
    queue_dict,
)
from scheduler.client import NodeState, QueueSettings
from scheduler.client.forecast import duration, estimate_line, forecast_dict


def _typer(help_text: str) -> typer.Typer:
    return typer.Typer(
        no_args_is_help=True,
        help=help_text,
        add_completion=False,
        rich_markup_mode="markdown",
        pretty_exceptions_show_locals=False,
    )


nodes_app = _typer("Nodes: list, show, drain and resume.")
jobs_app = _typer("Jobs of every user.")
queues_app = _typer("Queues: priorities, weights and GPU quotas.")
cluster_app = _typer("The cluster as a whole.")

NodeArg = Annotated[str, typer.Argument(help="Host name.")]


@nodes_app.command("list")
def nodes_list(
    server: ServerOption = DEFAULT,
    state: Annotated[
        list[NodeState] | None,
        typer.Option(
            "--state", help="Only nodes in this state (repeatable).", case_sensitive=False
        ),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List nodes with state, health, allocated GPUs and jobs."""
    with connect(server) as client:
        views = client.list_nodes(state or ())
    if output is OutputFormat.JSON:
        print_result([node_dict(v) for v in views], output)
        return
    print_result([node_row(v) for v in views], output, columns=NODE_COLUMNS)


@nodes_app.command("show")
def nodes_show(
    name: NodeArg, server: ServerOption = DEFAULT, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Show one node."""
    with connect(server) as client:
        view = client.get_node(name)
    print_result(node_dict(view), output, title=f"node {name}")


@nodes_app.command("drain")
def nodes_drain(
    name: NodeArg,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")],
    server: ServerOption = DEFAULT,
) -> None:
    """Take a node out of scheduling; running jobs continue until they end."""
    with connect(server) as client:
        view = client.drain_node(name, reason)
    typer.echo(f"{name}: {view.state.value} ({view.reason})")


@nodes_app.command("spare")
def nodes_spare(
    names: Annotated[list[str], typer.Argument(help="Hosts to put into the spare pool.")],
    server: ServerOption = DEFAULT,
) -> None:
    """Keep hosts as spares: only preemptible jobs run there (preempted first), and in-place
    repairs of failed jobs take them before other free hosts."""
    with connect(server) as client:
        views = client.set_node_spare(names, spare=True)
    for view in views:
        typer.echo(f"{view.name}: spare ({view.state.value})")


@nodes_app.command("unspare")
def nodes_unspare(
    names: Annotated[list[str], typer.Argument(help="Hosts to return to ordinary use.")],
    server: ServerOption = DEFAULT,
) -> None:
    """Return spare hosts to ordinary use."""
    with connect(server) as client:
        views = client.set_node_spare(names, spare=False)
    for view in views:
        typer.echo(f"{view.name}: not spare ({view.state.value})")


@nodes_app.command("resume")
def nodes_resume(
    name: NodeArg,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why.")] = "",
    skip_health_check: Annotated[
        bool,
        typer.Option(help="Return a drained node without its deep health check (you vouch)."),
    ] = False,
    server: ServerOption = DEFAULT,
) -> None:
    """Return a drained or draining node to service.

    A drained node's agent first runs the deep health check; the node returns only if it
    passes (exit 2, `health_check_failed`, otherwise; the node stays drained).
    """
    with connect(server) as client:
        view, check = client.resume_node(name, reason, skip_health_check=skip_health_check)
    typer.echo(f"{name}: {view.state.value}")
    if check is not None:
        typer.echo(f"deep health check passed in {check.duration_s:.1f} s: {check.summary}")


@jobs_app.command("list")
def jobs_list(
    server: ServerOption = DEFAULT,
    state: StateFilter = None,
    queue: QueueFilter = "",
    user: UserFilter = "",
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many jobs.")] = 500,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List the jobs of every user, oldest submission first."""
    print_job_list(server, state, queue, user, limit, output, ADMIN_JOB_COLUMNS)


@queues_app.command("list")
def queues_list(server: ServerOption = DEFAULT, output: OutputOption = OutputFormat.TABLE) -> None:
    """List queues with their settings, queued and active jobs."""
    with connect(server) as client:
        views = client.list_queues()
    print_result([queue_dict(v) for v in views], output, columns=QUEUE_COLUMNS)


@queues_app.command("set")
def queues_set(
    name: Annotated[str, typer.Argument(help="Queue name (created if new).")],
    priority: Annotated[int, typer.Option(help="Higher may preempt lower.")] = 0,
    weight: Annotated[float, typer.Option(min=0.0, help="Fair-share weight (> 0).")] = 1.0,
    gpu_quota: Annotated[
        int | None, typer.Option(min=0, help="Most GPUs the queue may hold (default: none).")
    ] = None,
    server: ServerOption = DEFAULT,
) -> None:
    """Create a queue or replace its settings."""
    with connect(server) as client:
        queue = client.set_queue(
            QueueSettings(name=name, priority=priority, weight=weight, gpu_quota=gpu_quota)
        )
    quota = "no quota" if queue.gpu_quota is None else f"quota {queue.gpu_quota} GPUs"
    typer.echo(f"queue {queue.name}: priority {queue.priority}, weight {queue.weight:g}, {quota}")


@cluster_app.command("status")
def cluster_status(
    server: ServerOption = DEFAULT, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Utilisation, fragmentation per tier, queue depths and what would fit now."""
    with connect(server) as client:
        status = client.cluster_status()
    data = cluster_dict(status)
    if output is OutputFormat.JSON:
        print_result(data, output)
        return
    console = Console()
    states = ", ".join(f"{k} {v}" for k, v in status.nodes_by_state.items() if v)
    console.print(
        f"[bold]{status.hosts:,} hosts[/] ({states}); GPUs: {status.allocated_gpus:,} of "
        f"{status.schedulable_gpus:,} in service allocated ({status.utilisation:.1%}), "
        f"{status.free_gpus:,} free, {status.gpus - status.schedulable_gpus:,} out of service; "
        f"stranded: {status.stranded_gpus} GPUs, {status.stranded_hosts} hosts",
        highlight=False,
    )
    print_result(
        [
            {
                "tier": t["tier"],
                "domains": t["domains"],
                "whole free": t["whole_free"],
                "partly free": t["partly_free"],
                "full": t["full"],
                "largest job (GPUs)": t["largest_placeable_gpus"],
            }
            for t in data["tiers"]
        ],
        output,
        title="fragmentation per tier",
    )
    fits = [{"job GPUs": size, "would fit": count} for size, count in sorted(status.fits.items())]
    print_result(fits, output, title="jobs that would fit now")
    print_result(data["queues"], output, title="queues")
    jobs = [{"state": s, "jobs": n} for s, n in status.jobs_by_state.items()]
    print_result(jobs, output, title="jobs by state")


@cluster_app.command("forecast")
def cluster_forecast(
    server: ServerOption = DEFAULT,
    queue: QueueFilter = "",
    user: UserFilter = "",
    hosts: Annotated[
        bool, typer.Option("--hosts", help="Include the hosts each job was simulated on.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """When each waiting job is expected to start, in that order.

    The scheduler simulates its live state forward (running jobs end at their time limits,
    jobs without one run the default limit; nothing fails or arrives) with its own ordering,
    backfill and placement. Users see their own jobs only.
    """
    with connect(server) as client:
        view = client.forecast_cluster(queue=queue, user=user, hosts=hosts)
    if output is OutputFormat.JSON:
        print_result(forecast_dict(view), output)
        return
    info = view.info
    reach = "complete" if info.complete else "its compute budget ran out"
    until = info.simulated_until.strftime("%Y-%m-%d %H:%M:%S UTC")
    unlimited = info.running_without_limit
    typer.echo(
        f"{view.waiting_jobs} waiting job(s); simulated until {until} in {info.compute_s:.2f} s "
        f"({reach}; horizon {duration(info.horizon_s)}); jobs without a time limit run "
        f"{duration(info.default_time_limit_s)}"
        + (f"; {unlimited} running without one" if unlimited else "")
        + (" (cached)" if info.cached else "")
    )
    rows = [
        {
            "#": e.position,
            "job": e.job_id,
            "user": e.user,
            "queue": e.queue,
            "gpus": e.gpus,
            "estimated start": estimate_line(e, info),
            **({"hosts": ", ".join(e.hosts)} if hosts else {}),
        }
        for e in view.jobs
    ]
    print_result(rows, output, title="estimated starts")
    if view.truncated:
        typer.echo("(more jobs than one answer holds: filter by --queue or --user)")
