"""What every command that talks to a live scheduler shares: the ``--server`` option, the
client it opens, and the one handler that turns errors into exit codes.

Exit codes (stable, scripts rely on them):

- ``0`` success;
- ``2`` bad input: a local file or option is invalid, or the server refused the request as
  invalid (``INVALID_ARGUMENT``, ``ALREADY_EXISTS``, ``FAILED_PRECONDITION``, ``OUT_OF_RANGE``);
- ``3`` not found (``NOT_FOUND``: unknown job, node or queue);
- ``4`` the server could not be reached or did not answer in time;
- ``1`` any other server error (``INTERNAL``...).

The message is one line on stderr: ``error: <reason>: <message>``.

Must not import ``scheduler.core`` internals, ``scheduler.store``, ``placement`` or the
generated protos: commands call :class:`scheduler.client.FirsthopClient`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Final

import typer

from scheduler.cli.common import EXIT_BAD_INPUT, OutputFormat, format_error, print_result
from scheduler.cli.views import job_dict, job_row
from scheduler.client import (
    DEFAULT_SERVER,
    FirsthopClient,
    JobState,
    RemoteError,
    ServerUnavailableError,
)
from topology.errors import InvalidInputError

EXIT_ERROR: Final = 1
EXIT_NOT_FOUND: Final = 3
EXIT_UNAVAILABLE: Final = 4

_BAD_INPUT_CODES = frozenset(
    {"INVALID_ARGUMENT", "ALREADY_EXISTS", "FAILED_PRECONDITION", "OUT_OF_RANGE"}
)

ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        envvar="FIRSTHOP_SERVER",
        help="Scheduler address HOST:PORT (or set FIRSTHOP_SERVER).",
        show_default=True,
    ),
]
"""The ``--server`` option; default it to :data:`DEFAULT_SERVER`."""

DEFAULT = DEFAULT_SERVER

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


def exit_code_of(exc: Exception) -> int | None:
    """The exit code of an error this handler knows, or ``None``."""
    if isinstance(exc, ServerUnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, RemoteError):
        if exc.code == "NOT_FOUND":
            return EXIT_NOT_FOUND
        return EXIT_BAD_INPUT if exc.code in _BAD_INPUT_CODES else EXIT_ERROR
    if isinstance(exc, InvalidInputError):
        return EXIT_BAD_INPUT
    return None


@contextlib.contextmanager
def remote_errors() -> Iterator[None]:
    """Turn client and input errors into one stderr line and an exit code (see above)."""
    try:
        yield
    except Exception as exc:
        code = exit_code_of(exc)
        if code is None:
            raise
        typer.echo(format_error(exc), err=True)
        raise typer.Exit(code) from None


@contextlib.contextmanager
def connect(server: str) -> Iterator[FirsthopClient]:
    """A client for ``server`` inside :func:`remote_errors`, closed afterwards."""
    with remote_errors(), FirsthopClient(server) as client:
        yield client
