"""Shared pieces of the firsthop command-line tools: output option, printing, error handling.

Every command module uses these rather than its own: one ``--output table|json`` option, one
function that prints a rich table for people or JSON for programs, and one handler that turns a
known error into a single ``error: <reason>: <message>`` line on stderr and an exit code.

Exit codes, one meaning each across every firsthop command line (README "Exit codes"):
:class:`topology.errors.ExitCode`.

Must not import ``scheduler.core``, ``scheduler.store``, ``placement`` or the generated protos:
commands call a typed client and hold no logic.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, TypeAlias

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from topology.errors import ExitCode, FirsthopError, exit_code_of, format_error

Row: TypeAlias = Mapping[str, object]
"""One record to print: column name -> value."""


class OutputFormat(StrEnum):
    """How a read command prints its result."""

    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        help="Output format: a table for people, or JSON for programs.",
        case_sensitive=False,
    ),
]
"""The ``--output`` option of every read command; default it to ``OutputFormat.TABLE``."""


def print_result(
    data: Row | Sequence[Row],
    output: OutputFormat,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Print a command's result to stdout as a rich table or as JSON.

    Args:
        data: One record (printed as a two-column field/value table) or a list of records
            (printed as one row each).
        output: The format the user chose with ``--output``.
        columns: Columns to show in table form, in order; defaults to the keys of the records
            in first-seen order. JSON output always holds every key.
        title: Optional table title; not part of the JSON output.

    Raises:
        TypeError: If a value cannot be written as JSON.
    """
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(data, indent=2, default=_json_default))
        return
    console = Console()
    if not console.is_terminal:
        # Piped output: lay tables out for a wide page rather than truncating cells at 80.
        console = Console(width=160)
    if isinstance(data, Mapping):
        table = Table("field", "value", title=title)
        for key in columns if columns is not None else list(data):
            table.add_row(Text(key), _cell(data.get(key)))
        console.print(table)
        return
    names = list(columns) if columns is not None else _columns_of(data)
    table = Table(*names, title=title)
    for row in data:
        table.add_row(*(_cell(row.get(name)) for name in names))
    console.print(table)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a firsthop error into one line on stderr and its exit code, never a traceback.

    Use it as a context manager around a command's body, or as a decorator under the Typer
    command decorator. The exit code comes from the one table every firsthop command line
    shares (:func:`topology.errors.exit_code_of`, listed in the README); the line is
    ``error: <reason>: <message>`` (:func:`topology.errors.format_error`). Other exceptions
    propagate unchanged: an unknown error is a bug and keeps its traceback.

    Raises:
        typer.Exit: With the error's exit code, after printing the line.
    """
    try:
        yield
    except FirsthopError as exc:
        typer.echo(format_error(exc), err=True)
        raise typer.Exit(exit_code_of(exc)) from None


def _columns_of(rows: Sequence[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: object) -> Text:
    # Text, not str: rich must not read brackets in names or messages as markup.
    if value is None:
        return Text("")
    if isinstance(value, Enum):
        return Text(str(value.value))
    if isinstance(value, Mapping | list | tuple | BaseModel):
        return Text(json.dumps(value, default=_json_default, separators=(",", ":")))
    return Text(str(value))


def _json_default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


__all__ = [
    "ExitCode",
    "OutputFormat",
    "OutputOption",
    "Row",
    "exit_on_error",
    "format_error",
    "print_result",
]
