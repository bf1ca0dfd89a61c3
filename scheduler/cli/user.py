"""``firsthop``: the users' client: submit, status, list, cancel, watch, explain jobs and read
their ranks' logs (``logs``).

Stable for scripts: ``submit`` prints the job id as the last word of its output;
``status ID --output json`` prints an object with ``id``, ``state`` (upper case) and
``placement`` (``hosts`` and ``ranks``) once placed (:mod:`scheduler.cli.views`). Every read
command takes ``--output json``. Exit codes are those of :mod:`scheduler.cli.remote`, plus
``watch``: 0 when the job succeeded, :data:`EXIT_JOB_DID_NOT_SUCCEED` when it ended otherwise.

Must not import ``scheduler.core`` internals, ``scheduler.store``, ``placement``, ``topology``
internals or the generated protos: commands call the typed client and hold no logic.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from scheduler.cli.common import ExitCode, OutputFormat, OutputOption, exit_on_error, print_result
from scheduler.cli.options import global_options
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
    JOB_COLUMNS,
    explanation_dict,
    job_dict,
    job_fields,
)
from scheduler.client import JobState, JobView
from scheduler.client.forecast import estimate_line
from scheduler.jobspec_file import load_job_spec
from scheduler.limits import require_command

EXIT_JOB_DID_NOT_SUCCEED: Final = ExitCode.JOB_DID_NOT_SUCCEED
RANKS_SHOWN: Final = 8

app = typer.Typer(
    name="firsthop",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


_ROOT_HELP = """Submit and manage training jobs on a firsthop cluster.

The scheduler address comes from `--server` (before the command, or after it) or
`FIRSTHOP_SERVER`; a token from `--token`, `FIRSTHOP_TOKEN` or `~/.firsthop/token`; the
cluster CA (TLS) from `--ca` or `FIRSTHOP_CA`.
"""


@app.command("submit")
def submit(
    job_file: Annotated[Path, typer.Argument(help="Job spec, YAML or JSON (DESIGN.md).")],
    server: ServerOption = DEFAULT,
    submission_id: Annotated[
        str | None,
        typer.Option(help="Idempotency key: repeating it returns the first job, not a new one."),
    ] = None,
    user: Annotated[str, typer.Option(help="Submit as this user.")] = "",
) -> None:
    """Submit a job; prints its id as the last word."""
    with exit_on_error():
        spec = load_job_spec(job_file)
        require_command(spec.command)
    with connect(server) as client:
        job, created = client.submit_job(spec, submission_id=submission_id, user=user)
    verb = "submitted" if created else "already submitted"
    typer.echo(f"{verb} {job.spec.name} ({job.spec.gpus} GPUs, queue {job.spec.queue}): {job.id}")


@app.command("status")
def status(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOption = DEFAULT,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one job: state, reason, placement and rank table."""
    with connect(server) as client:
        job = client.get_job(job_id)
    if output is OutputFormat.JSON:
        print_result(job_dict(job), output)
        return
    print_result(job_fields(job), output, title=f"job {job.id}")
    if job.placement is not None:
        ranks = [
            {"rank": s.rank, "host": s.host, "gpu": s.gpu}
            for s in job.placement.ranks[:RANKS_SHOWN]
        ]
        total = len(job.placement.ranks)
        title = f"ranks 0-{len(ranks) - 1} of {total}" if total > len(ranks) else "ranks"
        print_result(ranks, output, title=title)


@app.command("list")
def list_jobs(
    server: ServerOption = DEFAULT,
    state: StateFilter = None,
    queue: QueueFilter = "",
    user: UserFilter = "",
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many jobs.")] = 200,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List jobs, oldest submission first."""
    print_job_list(server, state, queue, user, limit, output, JOB_COLUMNS)


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOption = DEFAULT,
    reason: Annotated[str, typer.Option(help="Why (kept with the job).")] = "",
    graceful: Annotated[
        bool,
        typer.Option(
            "--graceful",
            help="Send the job's checkpoint signal and give it its grace to save and exit.",
        ),
    ] = False,
) -> None:
    """Cancel a job (running ranks are stopped)."""
    with connect(server) as client:
        job = client.cancel_job(job_id, reason, graceful=graceful)
    typer.echo(f"{job.id}: {job.state.value} ({job.reason})")


@app.command("watch")
def watch(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOption = DEFAULT,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Follow a job live until it ends (JSON: one object per change, one per line)."""
    last: JobView | None = None
    with connect(server) as client:
        if output is OutputFormat.JSON:
            for job in client.watch_job(job_id):
                typer.echo(json.dumps(job_dict(job)))
                last = job
        else:
            console = Console()
            with Live(console=console, auto_refresh=False, transient=False) as live:
                history: list[str] = []
                for job in client.watch_job(job_id):
                    if last is None or last.state is not job.state:
                        history.append(_transition_line(job))
                    live.update(_watch_view(job, history), refresh=True)
                    last = job
    if last is None or last.state is not JobState.SUCCEEDED:
        raise typer.Exit(EXIT_JOB_DID_NOT_SUCCEED)


@app.command("logs")
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    rank: Annotated[int, typer.Option("--rank", "-r", min=0, help="Which rank.")] = 0,
    tail: Annotated[
        int | None, typer.Option(min=1, help="Only the last BYTES bytes of the log.")
    ] = None,
    server: ServerOption = DEFAULT,
) -> None:
    """Print a rank's log (stdout and stderr of its process), read from its host's agent.

    The log of the job's current attempt, or of its last one once it let go of its GPUs. The
    log goes to standard output as it is; a header line (host, attempt) to standard error.
    """
    out = sys.stdout.buffer
    with connect(server) as client:
        piece = client.get_job_logs(job_id, rank, offset=-tail if tail else 0)
        typer.echo(f"== rank {rank} of {job_id} on {piece.host}, attempt {piece.attempt}", err=True)
        out.write(piece.data)
        offset = piece.offset + len(piece.data)
        while tail is None and piece.data and offset < piece.size:
            piece = client.get_job_logs(job_id, rank, offset=offset)
            out.write(piece.data)
            offset = piece.offset + len(piece.data)
    out.flush()


@app.command("explain")
def explain(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOption = DEFAULT,
    output: OutputOption = OutputFormat.TABLE,
    forecast: Annotated[
        bool,
        typer.Option(
            help="Estimate when a waiting job starts (simulates the cluster forward from now)."
        ),
    ] = True,
) -> None:
    """Say why a job is pending (the rule or the missing capacity), where it would go, and
    when it is expected to start."""
    with connect(server) as client:
        explanation = client.explain_job(job_id, forecast=forecast)
    data = explanation_dict(explanation)
    if output is OutputFormat.JSON:
        print_result(data, output)
        return
    message = f": {data['message']}" if data["message"] else ""
    typer.echo(f"{data['id']} is {data['state']}: {data['reason']}{message}")
    for line in explanation.details:
        typer.echo(f"  {line}")
    if explanation.placement_failure:
        typer.echo(f"  on the free GPUs now: {explanation.placement_failure}")
    would = explanation.would_place
    if would is not None:
        typer.echo(
            f"  would be placed on {len(would.hosts)} host(s): {', '.join(would.hosts[:8])}"
            f"{' ...' if len(would.hosts) > 8 else ''} (cost {would.cost_ms:.3f} ms, lower bound "
            f"{would.lower_bound_ms:.3f} ms)"
        )
    estimate, info = explanation.start_estimate, explanation.forecast
    if estimate is not None and info is not None:
        typer.echo(f"  estimated start: {estimate_line(estimate, info)}")


def _transition_line(job: JobView) -> str:
    at = job.updated_at.astimezone(UTC).strftime("%H:%M:%S")
    why = f" ({job.reason})" if job.reason else ""
    return f"{at} {job.state.value}{why}"


def _watch_view(job: JobView, history: list[str]) -> Group:
    table = Table.grid(padding=(0, 2))
    table.add_row(Text("job", style="bold"), Text(f"{job.id} {job.spec.name}"))
    table.add_row(Text("state", style="bold"), Text(job.state.value))
    alloc = job.placement
    if alloc is not None:
        hosts = alloc.hosts
        table.add_row(
            Text("hosts", style="bold"), Text(f"{job.hosts_running}/{len(hosts)} running")
        )
        shown = ", ".join(hosts[:8]) + (f" (+{len(hosts) - 8})" if len(hosts) > 8 else "")
        table.add_row(Text("placement", style="bold"), Text(shown))
    if job.restarts:
        table.add_row(Text("restarts", style="bold"), Text(str(job.restarts)))
    return Group(table, Text("\n".join(history)))


app.callback(help=_ROOT_HELP)(global_options)


def main() -> None:
    """Console-script entry point of ``firsthop``."""
    app(prog_name="firsthop")
