"""``firsthopctl``: the cluster administration CLI; one sub-app per command group.

This module only assembles the command groups (each in its own ``scheduler.cli.*_cmd``
module) under one Typer app: the offline ``topology`` and ``place`` commands, and ``nodes``,
``jobs``, ``queues`` and ``cluster`` against a live scheduler. Must not import
``scheduler.core`` or ``scheduler.store``: commands call a typed client or the pure packages
and hold no logic.
"""

import typer

from scheduler.cli.access_cmd import app as users_app
from scheduler.cli.access_cmd import audit
from scheduler.cli.certs_cmd import app as certs_app
from scheduler.cli.cluster_cmd import cluster_app, jobs_app, nodes_app, queues_app
from scheduler.cli.maintenance_cmd import app as maintenance_app
from scheduler.cli.options import global_options
from scheduler.cli.place_cmd import place
from scheduler.cli.slurm_cmd import app as slurm_app
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
app.add_typer(nodes_app, name="nodes")
app.add_typer(jobs_app, name="jobs")
app.add_typer(queues_app, name="queues")
app.add_typer(cluster_app, name="cluster")
app.add_typer(certs_app, name="certs")
app.add_typer(slurm_app, name="slurm")
app.add_typer(users_app, name="users")
app.command("audit")(audit)
app.add_typer(maintenance_app, name="maintenance")


_ROOT_HELP = """Administer a firsthop cluster.

Offline: `topology` (generate, import, show, export) and `place` (a placement dry run).
Against a live scheduler (`--server` before the command or after it, or `FIRSTHOP_SERVER`):
`nodes`, `jobs`, `queues`, `maintenance`, `cluster status` and `topology show --server`;
admins: `users` and `audit`. Credentials: `--token` (or `FIRSTHOP_TOKEN`,
`~/.firsthop/token`) and `--ca` (or `FIRSTHOP_CA`).
"""


app.callback(help=_ROOT_HELP)(global_options)


def main() -> None:
    """Console-script entry point of ``firsthopctl``."""
    app(prog_name="firsthopctl")
