"""What every command that talks to a live scheduler shares: the ``--server`` option, the
client it opens (with the credentials of :mod:`scheduler.cli.credentials`), and the one
handler that turns errors into exit codes.

Exit codes (stable, scripts rely on them) are the table every firsthop command line shares,
:class:`topology.errors.ExitCode` (README "Exit codes"): a server's answer maps by its status
code (``2`` bad input or refused as it stands, ``3`` not found, ``4`` unreachable, ``1``
anything else). The message is one line on stderr: ``error: <reason>: <message>``.

The address: a command's own ``--server``, else the global one given before the command
(``firsthop --server X status ID``) or ``FIRSTHOP_SERVER``, else the default
(:mod:`scheduler.cli.options`).

Must not import ``scheduler.core`` internals, ``scheduler.store``, ``placement`` or the
generated protos: commands call :class:`scheduler.client.FirsthopClient`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

import typer

from scheduler.cli.common import OutputFormat, exit_on_error, print_result
from scheduler.cli.options import resolve_ca, resolve_server, resolve_token
from scheduler.cli.views import job_dict, job_row
from scheduler.client import FirsthopClient, JobState

ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        help="Scheduler address HOST:PORT, or a comma-separated list of a leader and its "
        "standbys (default: the global --server, FIRSTHOP_SERVER, or 127.0.0.1:50051).",
        show_default=False,
    ),
]
"""A command's own ``--server`` option; default it to :data:`DEFAULT` (unset: the global
option decides)."""

DEFAULT = ""

StateFilter = Annotated[
    list[JobState] | None,
    typer.Option("--state", help="Only jobs in this state (repeatable).", case_sensitive=False),
]
QueueFilter = Annotated[str, typer.Option("--queue", help="Only jobs of this queue.")]
UserFilter = Annotated[str, typer.Option("--user", help="Only jobs of this user.")]


def print_job_list(
    server: str,
    states: list[JobState] | None,
    queue: str,
    user: str,
    limit: int,
    output: OutputFormat,
    columns: tuple[str, ...],
) -> None:
    """Fetch jobs matching the filters and print them (JSON: every field; table: columns)."""
    with connect(server) as client:
        jobs = list(client.list_jobs(states=states or (), queue=queue, user=user, limit=limit))
    if output is OutputFormat.JSON:
        print_result([job_dict(j) for j in jobs], output)
        return
    now = datetime.now(UTC)
    print_result([job_row(j, now) for j in jobs], output, columns=columns)


@contextlib.contextmanager
def connect(server: str) -> Iterator[FirsthopClient]:
    """A client for ``server`` (empty: the global option's, see
    :func:`~scheduler.cli.options.resolve_server`) with the caller's token and CA, inside
    :func:`~scheduler.cli.common.exit_on_error`, closed afterwards."""
    with (
        exit_on_error(),
        FirsthopClient(resolve_server(server), token=resolve_token(), ca=resolve_ca()) as client,
    ):
        yield client
