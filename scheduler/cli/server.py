"""``firsthop-scheduler``: runs the scheduler server.

It will load the configuration, build the server through the composition root (gRPC API,
scheduling core, store) and serve until stopped. For now it declares the entry point and
prints its help.

Must not import ``agents``: the server reaches agents only over gRPC.
"""

import typer

app = typer.Typer(
    name="firsthop-scheduler",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Run the firsthop scheduler server.

    Will serve the gRPC API (jobs, administration, agents, Slurm) on top of the scheduling
    core and its store (embedded SQLite or PostgreSQL). No commands exist yet.
    """


def main() -> None:
    """Console-script entry point of ``firsthop-scheduler``."""
    app(prog_name="firsthop-scheduler")
