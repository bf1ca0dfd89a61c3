"""``firsthopctl topology``: generate, import, show and export cluster topologies.

Commands only parse options, call ``topology`` functions and print through
``scheduler.cli.common``; the topology logic lives in the ``topology`` package.

Must not import ``scheduler.core``, ``scheduler.store``, ``agents`` or the generated protos.
"""

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Generate, import, show and export cluster topologies.",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)
