"""Tests of the shared CLI pieces: the output option, result printing, the error handler and
the one exit-code table of every firsthop command line."""

import json
from enum import StrEnum

import pytest
import typer
from typer.testing import CliRunner

from scheduler.cli.common import (
    ExitCode,
    OutputFormat,
    OutputOption,
    exit_on_error,
    format_error,
    print_result,
)
from topology.errors import FirsthopError, exit_code_of

EXIT_BAD_INPUT = ExitCode.BAD_INPUT


class _BadInputError(FirsthopError):
    status_code = "INVALID_ARGUMENT"
    default_reason = "TOPOLOGY_INVALID"


class _NotFoundError(_BadInputError):
    status_code = "NOT_FOUND"
    default_reason = "HOST_NOT_FOUND"


class _Color(StrEnum):
    RED = "red"


ROWS = [
    {"host": "h0001", "gpus": 8, "state": _Color.RED},
    {"host": "h[0002]", "gpus": 4, "note": "no [bold]markup[/bold]"},
]


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def show(output: OutputOption = OutputFormat.TABLE, fail: str = "") -> None:
        with exit_on_error():
            if fail == "missing":
                raise _NotFoundError("host h9 is not in\nthe topology")
            if fail == "bad":
                raise _BadInputError("leaf l01 appears twice")
            if fail == "bug":
                raise KeyError("boom")
            print_result(ROWS, output, title="hosts")

    @app.command()
    def one(output: OutputOption = OutputFormat.TABLE) -> None:
        print_result({"name": "t", "hosts": ["h1", "h2"]}, output)

    return app


def test_json_output_is_parseable_and_complete() -> None:
    result = CliRunner().invoke(_app(), ["show", "--output", "json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"host": "h0001", "gpus": 8, "state": "red"},
        {"host": "h[0002]", "gpus": 4, "note": "no [bold]markup[/bold]"},
    ]


def test_table_output_shows_every_column_and_no_markup_is_interpreted() -> None:
    result = CliRunner().invoke(_app(), ["show", "-o", "TABLE"])

    assert result.exit_code == 0, result.output
    for text in ("host", "gpus", "state", "note", "h0001", "h[0002]", "red", "[bold]markup"):
        assert text in result.stdout


def test_single_record_prints_as_field_value_table() -> None:
    result = CliRunner().invoke(_app(), ["one"])

    assert result.exit_code == 0, result.output
    assert '["h1","h2"]' in result.stdout


@pytest.mark.parametrize(
    ("fail", "code", "line"),
    [
        ("bad", EXIT_BAD_INPUT, "error: TOPOLOGY_INVALID: leaf l01 appears twice"),
        ("missing", 3, "error: HOST_NOT_FOUND: host h9 is not in the topology"),
    ],
)
def test_registered_error_prints_one_line_and_exits_with_its_code(
    fail: str, code: int, line: str
) -> None:
    result = CliRunner().invoke(_app(), ["show", "--fail", fail])

    assert result.exit_code == code
    assert result.stderr == line + "\n"
    assert result.stdout == ""
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_unregistered_error_propagates() -> None:
    result = CliRunner().invoke(_app(), ["show", "--fail", "bug"])

    assert isinstance(result.exception, KeyError)


def test_exit_on_error_works_as_a_decorator() -> None:
    app = typer.Typer()

    @app.command()
    @exit_on_error()
    def check(name: str) -> None:
        raise _BadInputError(f"bad name {name}")

    result = CliRunner().invoke(app, ["x1"])

    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr == "error: TOPOLOGY_INVALID: bad name x1\n"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("INVALID_ARGUMENT", 2),
        ("FAILED_PRECONDITION", 2),
        ("ALREADY_EXISTS", 2),
        ("NOT_FOUND", 3),
        ("UNAVAILABLE", 4),
        ("DEADLINE_EXCEEDED", 4),
        ("INTERNAL", 1),
        ("ABORTED", 1),
    ],
)
def test_one_exit_code_per_status_for_every_command_line(status: str, code: int) -> None:
    error = FirsthopError("x")
    error.status_code = status

    assert exit_code_of(error) == code


def test_format_error_falls_back_to_class_name_without_reason() -> None:
    assert format_error(ValueError("no")) == "error: ValueError: no"
    assert format_error(ValueError()) == "error: ValueError"
