"""Which local account a rank runs as: the submitting user's, when the agent runs as root.

A job's user is the scheduler's authenticated caller (never a request field), so an agent that
runs as root must not run every rank as root. :class:`UserMap` turns a firsthop user into a
local account: the entry of a mapping file (``--user-map FILE``, YAML ``firsthop_user:
local_account``), else the account of the same name. Accounts are looked up in the system's
user database (``pwd``); an unknown account, or one with uid 0, refuses the start with a stable
reason (``unknown_account``, ``root_account_refused``) rather than fall back to root.

The process is started with that uid, gid and supplementary groups, straight from an argv
list (never a shell), with ``HOME``, ``USER`` and ``LOGNAME`` set to the account's.

Must not import ``scheduler`` (agents reach the scheduler only over gRPC).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from topology.errors import FirsthopError, InvalidInputError


class AccountError(FirsthopError):
    """A job's user has no local account a rank may run as."""

    status_code = "FAILED_PRECONDITION"
    default_reason = "unknown_account"


@dataclass(frozen=True, slots=True)
class Account:
    """A local account: who a rank's process runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def environment(self) -> dict[str, str]:
        """The variables that name the account."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


class UserMap:
    """firsthop users -> local accounts (module docstring)."""

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self.mapping: dict[str, str] = dict(mapping or {})

    @classmethod
    def load(cls, path: Path) -> UserMap:
        """Read a mapping file.

        Raises:
            InvalidInputError: ``invalid_user_map``.
        """
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InvalidInputError(
                f"cannot read the user map {path}: {type(exc).__name__}", reason="invalid_user_map"
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise InvalidInputError(
                f"{path}: expected a mapping of firsthop user to local account",
                reason="invalid_user_map",
            )
        return cls(data)

    def account_of(self, user: str) -> Account:
        """The local account of ``user``.

        Raises:
            AccountError: no such account (``unknown_account``), or it is root
                (``root_account_refused``).
        """
        local = self.mapping.get(user, user)
        try:
            entry = pwd.getpwnam(local)
        except (KeyError, ValueError):
            raise AccountError(f"user {user[:64]!r} has no local account {local[:64]!r}") from None
        if entry.pw_uid == 0:
            raise AccountError(
                f"user {user[:64]!r} maps to a root account", reason="root_account_refused"
            )
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)
