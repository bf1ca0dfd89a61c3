"""``firsthopctl``: the cluster administration CLI; one sub-app per command group.

This module only assembles the command groups (each in its own ``scheduler.cli.*_cmd``
module) under one Typer app. Must not import ``scheduler.core`` or ``scheduler.store``:
commands call a typed client or the pure packages and hold no logic.
"""

import typer

from scheduler.cli.place_cmd import place
from scheduler.cli.topology_cmd import app as topology_app

app = typer.Typer(
    name="firsthopctl",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)
app.add_typer(topology_app, name="topology")
app.command("place")(place)


@app.callback()
def _root() -> None:
    """Administer a firsthop cluster.

    Offline: `topology` (generate, import, show, export) and `place` (a placement dry run).
    Nodes, jobs, queues and rolling maintenance campaigns follow as further command groups.
    """


def main() -> None:
    """Console-script entry point of ``firsthopctl``."""
    app(prog_name="firsthopctl")
