"""``firsthop-agent``: runs the node agent on one host.

It will register the host with the scheduler, stream heartbeats with GPU health probe
results, launch and supervise job ranks, and run maintenance actions. For now it declares the
entry point and prints its help.

Must not import ``scheduler`` (enforced by import-linter): the agent reaches the scheduler only
over gRPC, so it cannot use ``scheduler.cli.common`` either.
"""

import typer

app = typer.Typer(
    name="firsthop-agent",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Run the firsthop node agent on this host.

    Will register the host with the scheduler, report GPU health in heartbeats, launch and
    supervise job ranks, and run maintenance actions such as driver upgrades followed by deep
    health checks. No commands exist yet.
    """


def main() -> None:
    """Console-script entry point of ``firsthop-agent``."""
    app(prog_name="firsthop-agent")
