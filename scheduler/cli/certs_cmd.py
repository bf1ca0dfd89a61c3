"""``firsthopctl certs``: create the cluster CA and issue scheduler, agent and Slurm plug-in
certificates.

Offline commands: they write PEM files (mode 0600) and print where. Must not import
``scheduler.core``, ``scheduler.store`` or the generated protos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.common import (
    OutputFormat,
    OutputOption,
    exit_on_error,
    print_result,
)
from scheduler.security.certs import (
    DEFAULT_DAYS,
    Issued,
    init_ca,
    issue_agent,
    issue_server,
    issue_slurm,
)

app = typer.Typer(no_args_is_help=True, help="The cluster CA and its certificates.")

DirOption = Annotated[
    Path, typer.Option("--dir", help="Directory of the CA (ca.crt, ca.key).", show_default=True)
]
OutDirOption = Annotated[
    Path | None,
    typer.Option("--out", help="Where to write the certificate and key (default: --dir)."),
]
DaysOption = Annotated[int, typer.Option("--days", min=1, max=3650, help="Validity in days.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace existing files.")]


def _show(issued: Issued, what: str, output: OutputFormat) -> None:
    print_result({"what": what, "cert": str(issued.cert), "key": str(issued.key)}, output)


@app.command("init")
def init(
    directory: DirOption = Path("firsthop-ca"),
    name: Annotated[str, typer.Option("--name", help="The CA's common name.")] = (
        "firsthop cluster CA"
    ),
    force: ForceOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create the cluster CA in --dir."""
    with exit_on_error():
        _show(init_ca(directory, name, force=force), "ca", output)


@app.command("issue-server")
def server(
    name: Annotated[str, typer.Argument(help="The scheduler's name (certificate CN).")],
    san: Annotated[
        list[str] | None,
        typer.Option("--san", help="A DNS name or IP address clients dial (repeatable)."),
    ] = None,
    directory: DirOption = Path("firsthop-ca"),
    out: OutDirOption = None,
    days: DaysOption = DEFAULT_DAYS,
    force: ForceOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Issue a scheduler certificate (NAME.crt, NAME.key)."""
    with exit_on_error():
        issued = issue_server(directory, name, san or [], out=out, days=days, force=force)
        _show(issued, "server", output)


@app.command("issue-agent")
def agent(
    host: Annotated[str, typer.Argument(help="The host the agent runs on (certificate CN).")],
    directory: DirOption = Path("firsthop-ca"),
    out: OutDirOption = None,
    days: DaysOption = DEFAULT_DAYS,
    force: ForceOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Issue an agent certificate for HOST (HOST.crt, HOST.key)."""
    with exit_on_error():
        _show(issue_agent(directory, host, out=out, days=days, force=force), "agent", output)


@app.command("issue-slurm")
def slurm(
    name: Annotated[
        str, typer.Argument(help="A name for the Slurm plug-in's hooks (certificate CN).")
    ] = "slurm",
    directory: DirOption = Path("firsthop-ca"),
    out: OutDirOption = None,
    days: DaysOption = DEFAULT_DAYS,
    force: ForceOption = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Issue the Slurm plug-in's certificate (NAME.crt, NAME.key; `slurm install --cert`)."""
    with exit_on_error():
        _show(issue_slurm(directory, name, out=out, days=days, force=force), "slurm", output)
