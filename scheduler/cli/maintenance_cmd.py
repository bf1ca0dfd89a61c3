"""``firsthopctl maintenance start|status|list|pause|resume|abort|ready|done``: rolling
maintenance campaigns (driver, firmware, kernel) that flow through the cluster around jobs.

The scheduler plans and paces a campaign (:mod:`scheduler.core.campaigns`); these commands
only ask and show. Exit codes are those of :mod:`scheduler.cli.remote`. Must not import
``scheduler.core`` internals, ``scheduler.store``, ``placement`` or the generated protos.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from scheduler.cli.common import OutputFormat, OutputOption, print_result
from scheduler.cli.remote import DEFAULT, ServerOption, connect
from scheduler.client.maintenance import CampaignRequest, CampaignView
from topology.errors import InvalidInputError

app = typer.Typer(
    no_args_is_help=True,
    help="Rolling maintenance campaigns: start, status, list, pause, resume, abort, ready, done.",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)

NameArg = Annotated[str, typer.Argument(help="The campaign's name.")]
BAR_WIDTH = 30


def parse_time(text: str | None, flag: str) -> datetime | None:
    """An ISO 8601 instant (UTC when it names no zone).

    Raises:
        InvalidInputError: ``invalid_time``.
    """
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{flag}: expected an ISO 8601 time like 2026-12-01T22:00:00Z, got {text[:40]!r}",
            reason="invalid_time",
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@app.command("start")
def start(
    name: NameArg,
    command: Annotated[
        list[str] | None,
        typer.Argument(help="After `--`: the action's argv, run on each host (not a shell)."),
    ] = None,
    hosts: Annotated[
        str,
        typer.Option(
            "--hosts", help="all, a comma list of hosts, a leaf or pod name, or label=value."
        ),
    ] = "all",
    max_unavailable: Annotated[
        str, typer.Option("--max-unavailable", help="Hosts out at once: N or P%.")
    ] = "1",
    per_domain: Annotated[
        str, typer.Option("--per-domain", help="Per-domain budgets: leaf=1,pod=10%.")
    ] = "",
    busy: Annotated[
        str,
        typer.Option(
            "--busy",
            help="wait (for jobs to end) or migrate (checkpoint, move their ranks, restart).",
        ),
    ] = "wait",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Allow stopping jobs without a fresh checkpoint (migrate: after their grace).",
        ),
    ] = False,
    health_check: Annotated[
        str, typer.Option("--health-check", help="fast or deep, before a host returns.")
    ] = "fast",
    max_failures: Annotated[
        int | None, typer.Option("--max-failures", help="Pause after this many failed hosts.")
    ] = None,
    not_before: Annotated[
        str | None, typer.Option("--not-before", help="Start no earlier (ISO 8601).")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option("--deadline", help="Take no host after this (ISO 8601).")
    ] = None,
    external: Annotated[
        bool, typer.Option("--external", help="Only drain and hand hosts over (ready/done).")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds the action may run on a host.")
    ] = 3600.0,
    server: ServerOption = DEFAULT,
) -> None:
    """Start a campaign: `start NAME --hosts SEL [...] -- COMMAND ARGS...` or `--external`."""
    with connect(server) as client:
        request = CampaignRequest(
            name=name,
            selector=hosts,
            max_unavailable=max_unavailable,
            per_domain=per_domain,
            busy=busy,
            force=force,
            health_check=health_check,
            max_failures=max_failures,
            not_before=parse_time(not_before, "--not-before"),
            deadline=parse_time(deadline, "--deadline"),
            command=tuple(command or ()),
            external=external,
            timeout_s=timeout,
        )
        view = client.start_maintenance(request)
    typer.echo(f"{view.name}: {view.state} ({len(view.hosts)} hosts)")


@app.command("status")
def status(
    name: NameArg, server: ServerOption = DEFAULT, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Progress and every host's state, reason, attempts and time in that state."""
    with connect(server) as client:
        view = client.get_maintenance(name)
    if output is OutputFormat.JSON:
        print_result(view.to_dict(), output)
        return
    typer.echo(_summary(view))
    now = datetime.now(UTC)
    rows = [
        {
            "host": h.host,
            "state": h.state,
            "attempts": h.attempts,
            "for": _ago(h.since, now),
            "reason": h.reason,
        }
        for h in view.hosts
    ]
    print_result(rows, output)


@app.command("list")
def list_campaigns(
    server: ServerOption = DEFAULT, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Every campaign with its progress."""
    with connect(server) as client:
        views = client.list_maintenance()
    if output is OutputFormat.JSON:
        print_result([v.to_dict() for v in views], output)
        return
    rows = [
        {
            "name": v.name,
            "state": v.state,
            "done": f"{v.count('DONE')}/{len(v.hosts)}",
            "failed": v.count("FAILED"),
            "reason": v.reason,
        }
        for v in views
    ]
    print_result(rows, output)


def _control(name: str, op: str, reason: str, server: str) -> None:
    with connect(server) as client:
        view = client.control_maintenance(name, op, reason)
    typer.echo(f"{view.name}: {view.state}" + (f" ({view.reason})" if view.reason else ""))


ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="Why.")]


@app.command("pause")
def pause(name: NameArg, reason: ReasonOption = "", server: ServerOption = DEFAULT) -> None:
    """Take no new hosts; hosts already out finish."""
    _control(name, "pause", reason, server)


@app.command("resume")
def resume(name: NameArg, server: ServerOption = DEFAULT) -> None:
    """Go on after a pause; failed hosts are tried again."""
    _control(name, "resume", "", server)


@app.command("abort")
def abort(name: NameArg, reason: ReasonOption = "", server: ServerOption = DEFAULT) -> None:
    """Stop the campaign; draining hosts return to service, hosts mid-action finish."""
    _control(name, "abort", reason, server)


@app.command("ready")
def ready(
    name: NameArg, server: ServerOption = DEFAULT, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Hosts of an `--external` campaign drained and handed over for work."""
    with connect(server) as client:
        view = client.get_maintenance(name)
    hosts = view.ready()
    if output is OutputFormat.JSON:
        print_result({"name": view.name, "hosts": hosts}, output)
        return
    for host in hosts:
        typer.echo(host)


@app.command("done")
def done(
    name: NameArg,
    host: Annotated[str, typer.Argument(help="The host handed back.")],
    failed: Annotated[
        str | None, typer.Option("--failed", help="Its maintenance failed, and why.")
    ] = None,
    server: ServerOption = DEFAULT,
) -> None:
    """Hand a host of an `--external` campaign back (checked, then returned to service)."""
    with connect(server) as client:
        view = client.maintenance_host_done(name, host, failed=failed)
    entry = next((h for h in view.hosts if h.host == host), None)
    typer.echo(f"{host}: {entry.state if entry else '?'}")


def _summary(view: CampaignView) -> str:
    total = len(view.hosts) or 1
    finished = view.count("DONE") + view.count("FAILED")
    filled = round(BAR_WIDTH * finished / total)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    out = sum(view.count(s) for s in ("DRAINING", "IN_MAINTENANCE", "CHECKING"))
    line = (
        f"{view.name}: {view.state} [{bar}] {view.count('DONE')}/{len(view.hosts)} done, "
        f"{view.count('FAILED')} failed, {out} out, {view.count('WAITING')} waiting; "
        f"jobs moved {len(view.jobs_moved)}, waited {len(view.jobs_waited)}, "
        f"GPU-hours lost {view.gpu_hours_lost:.2f}"
    )
    return line + (f"\nreason: {view.reason}" if view.reason else "")


def _ago(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    seconds = max(0, int((now - since).total_seconds()))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"
