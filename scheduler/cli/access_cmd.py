"""``firsthopctl users add|list|revoke`` and ``firsthopctl audit``: users, tokens, audit trail.

``users add NAME --role user|operator|admin`` prints the new token once (the scheduler keeps
only its digest): the last word of the output, so scripts can take it with ``awk '{print
$NF}'``. All of these need an admin's token (docs/security.md "Bootstrapping").

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``:
commands call the typed client.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from scheduler.cli.common import OutputFormat, OutputOption, print_result
from scheduler.cli.remote import DEFAULT, ServerOption, connect
from scheduler.client import AuditView, UserTokenView

app = typer.Typer(
    name="users",
    help="Users and their bearer tokens (admins only).",
    no_args_is_help=True,
    add_completion=False,
)


class RoleChoice(StrEnum):
    """Roles a token may carry."""

    USER = "user"
    OPERATOR = "operator"
    ADMIN = "admin"


def _when(at: datetime | None) -> str:
    return "" if at is None else at.isoformat(timespec="seconds")


def _token_row(token: UserTokenView) -> dict[str, object]:
    return {
        "token_id": token.token_id,
        "user": token.user,
        "role": token.role,
        "created_at": _when(token.created_at),
        "revoked_at": _when(token.revoked_at),
    }


def _audit_row(entry: AuditView) -> dict[str, object]:
    return {
        "at": _when(entry.at),
        "who": entry.who,
        "role": entry.role,
        "via": entry.via,
        "method": entry.method,
        "resource": entry.resource,
        "result": entry.result,
    }


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    role: Annotated[RoleChoice, typer.Option(help="What the token may do.")] = RoleChoice.USER,
    server: ServerOption = DEFAULT,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Mint a token for NAME and print it once (the token is the last word)."""
    with connect(server) as client:
        info, token = client.add_user(name, role.value)
    if output is OutputFormat.JSON:
        print_result({**_token_row(info), "token": token}, output)
        return
    typer.echo(f"user {info.user} ({info.role}), token id {info.token_id}")
    typer.echo("keep this token now; it is not shown again:", err=True)
    typer.echo(token)


@app.command("list")
def list_users(server: ServerOption = DEFAULT, output: OutputOption = OutputFormat.TABLE) -> None:
    """Every token: its id, user, role, when created and revoked (never the secret)."""
    with connect(server) as client:
        tokens = client.list_users()
    print_result([_token_row(t) for t in tokens], output)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The user whose tokens to revoke.")],
    server: ServerOption = DEFAULT,
) -> None:
    """Revoke every live token of NAME (unknown_user when there is none)."""
    with connect(server) as client:
        count = client.revoke_user(name)
    typer.echo(f"revoked {count} token(s) of {name}")


def audit(
    server: ServerOption = DEFAULT,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest N entries.")] = 100,
    user: Annotated[str, typer.Option(help="Only calls by this caller.")] = "",
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The audit trail: state-changing and refused calls (who, method, resource, result)."""
    with connect(server) as client:
        entries = client.list_audit(limit=limit, user=user)
    print_result([_audit_row(e) for e in entries], output)
