"""Global options: what may come before the command in ``firsthop`` and ``firsthopctl``
(``firsthop --server X submit job.yaml``, as kubectl and scontrol take them), in one place.

:func:`global_options` is the root callback of both command lines; it records what it was
given in a :class:`GlobalOptions` for the rest of the invocation (a context variable, reset
when the invocation ends). A command reads it back with :func:`current`. A per-command option
of the same name (``submit --server X``) still wins; then the global option; then its
environment variable (``FIRSTHOP_SERVER``); then the default.

To add a global option (a token, a CA file, a list of servers), add a field to
:class:`GlobalOptions` and a parameter to :func:`global_options`: both command lines get it.

Must not import ``scheduler.core``, ``scheduler.store``, ``placement`` or the generated protos.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli import credentials
from scheduler.cli.credentials import CaOption, TokenOption
from scheduler.client import DEFAULT_SERVER

SERVER_ENV = "FIRSTHOP_SERVER"


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    """The options given before the command (``None``: not given, nor in the environment)."""

    server: str | None = None
    token: str | None = None
    ca: Path | None = None


_CURRENT: ContextVar[GlobalOptions | None] = ContextVar("firsthop_global_options", default=None)


def global_options(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            "-s",
            envvar=SERVER_ENV,
            help=f"Scheduler address HOST:PORT for every command (or set {SERVER_ENV}; "
            f"default {DEFAULT_SERVER}).",
            show_default=False,
        ),
    ] = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """The root callback of both command lines: keep the global options for the command."""
    reset = _CURRENT.set(GlobalOptions(server=server or None, token=token or None, ca=ca))
    ctx.call_on_close(lambda: _CURRENT.reset(reset))


def current() -> GlobalOptions:
    """The global options of the command line now running (all unset outside one)."""
    return _CURRENT.get() or GlobalOptions()


def resolve_server(explicit: str | None) -> str:
    """The scheduler address: the command's own ``--server``, else the global one (or
    ``FIRSTHOP_SERVER``), else :data:`~scheduler.client.DEFAULT_SERVER`."""
    return explicit or current().server or DEFAULT_SERVER


def resolve_token() -> str | None:
    """The bearer token to send (:func:`scheduler.cli.credentials.token`), or ``None``."""
    return credentials.token(current().token)


def resolve_ca() -> bytes | None:
    """The cluster CA's PEM bytes (:func:`scheduler.cli.credentials.ca`), or ``None``."""
    return credentials.ca(current().ca)
