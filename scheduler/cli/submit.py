"""``firsthop``: the job submission client.

It will submit job specs (YAML or JSON) to the scheduler's gRPC JobService and list, show and
cancel the caller's jobs. For now it declares the entry point and prints its help.

Must not import ``scheduler.core``, ``scheduler.store``, ``placement`` or ``topology``: it
reaches the scheduler only through the gRPC client.
"""

import typer

app = typer.Typer(
    name="firsthop",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Submit and manage training jobs on a firsthop cluster.

    Will submit a job spec (YAML or JSON: GPU count, parallelism sizes and order, command,
    checkpointing) to the scheduler over gRPC, and list, show and cancel your jobs. No
    commands exist yet.
    """


def main() -> None:
    """Console-script entry point of ``firsthop``."""
    app(prog_name="firsthop")
