"""Where the command-line tools find their credentials: a bearer token and the cluster CA.

Token, first found: ``--token`` (a global option, :mod:`scheduler.cli.options`:
``firsthop --token T ...``),
``FIRSTHOP_TOKEN``, then the file ``~/.firsthop/token`` (``FIRSTHOP_TOKEN_FILE`` names another).
The file must be private to its owner (no group or other permission bits: ``chmod 600``),
otherwise the command refuses it with ``insecure_token_file`` rather than use a secret others
can read. CA, first found: ``--ca`` or ``FIRSTHOP_CA`` (a PEM file); with one, the channel is
TLS. Neither is ever printed.

Must not import ``scheduler.core``, ``scheduler.store``, ``placement`` or the generated protos.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Final

import typer

from topology.errors import InvalidInputError

TOKEN_ENV: Final = "FIRSTHOP_TOKEN"
TOKEN_FILE_ENV: Final = "FIRSTHOP_TOKEN_FILE"
CA_ENV: Final = "FIRSTHOP_CA"
TOKEN_FILE: Final = Path(".firsthop") / "token"
"""Relative to the user's home directory."""

TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=TOKEN_ENV,
        help="Bearer token (or FIRSTHOP_TOKEN, or the file ~/.firsthop/token, mode 600).",
        show_envvar=False,
    ),
]
CaOption = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        envvar=CA_ENV,
        help="Cluster CA certificate (PEM) to check the scheduler's TLS certificate.",
    ),
]


def token_file() -> Path:
    """The token file this user's commands read."""
    named = os.environ.get(TOKEN_FILE_ENV)
    return Path(named) if named else Path.home() / TOKEN_FILE


def read_token_file(path: Path) -> str | None:
    """The token in ``path`` (``None`` when there is no such file).

    Raises:
        InvalidInputError: ``insecure_token_file`` when group or others may read or write it,
            ``unreadable_file`` when it cannot be read.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror}", reason="unreadable_file"
        ) from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise InvalidInputError(
            f"{path} may be read by others (mode {stat.S_IMODE(info.st_mode):o}): "
            f"run chmod 600 {path}",
            reason="insecure_token_file",
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise InvalidInputError(f"cannot read {path}", reason="unreadable_file") from None
    return text or None


def token(given: str | None = None) -> str | None:
    """The token to send: ``given`` (the ``--token`` option), else as the module docstring
    says, or ``None``."""
    if given:
        return given
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return from_env
    return read_token_file(token_file())


def ca(given: Path | None = None) -> bytes | None:
    """The cluster CA's PEM bytes (``given``: the ``--ca`` option), or ``None`` (a plain
    channel).

    Raises:
        InvalidInputError: ``unreadable_file``.
    """
    path = given
    if path is None and os.environ.get(CA_ENV):
        path = Path(os.environ[CA_ENV])
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror}", reason="unreadable_file"
        ) from None
