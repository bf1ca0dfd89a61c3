"""Slurm commands the plug-in runs (``scontrol``, ``sinfo``, ``squeue``), behind a seam.

Argv lists only, a timeout on every call (a dead controller makes Slurm clients retry for
minutes), and ``SLURM_CONF`` passed explicitly: hooks start without it. Tests and the status
command inject a :class:`CommandRunner`; :class:`SubprocessRunner` is the real one.

Must not import ``scheduler``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_TIMEOUT_S = 10.0
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class Completed:
    """What a command did."""

    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    """Runs one command."""

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float) -> Completed:
        """Run ``argv``; a timeout or a missing program is a non-zero ``returncode``."""
        ...


class SubprocessRunner:
    """The real :class:`CommandRunner` (``subprocess.run``, no shell)."""

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float) -> Completed:
        """Run ``argv`` with a timeout."""
        try:
            done = subprocess.run(
                list(argv),
                env=dict(env),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Completed(124, "", f"{argv[0]} timed out after {timeout:g} s")
        except OSError as exc:
            return Completed(127, "", f"{argv[0]}: {exc}")
        return Completed(done.returncode, done.stdout, done.stderr)


def slurm_env(slurm_conf: str) -> dict[str, str]:
    """A minimal environment for Slurm clients: ``SLURM_CONF`` and a PATH."""
    return {
        "SLURM_CONF": slurm_conf,
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def drain_argv(scontrol: str, node: str, reason: str) -> list[str]:
    """``scontrol update nodename=NODE state=drain reason="firsthop: ..."``."""
    text = reason if reason.startswith("firsthop:") else f"firsthop: {reason}"
    text = " ".join(text.split())[:MAX_REASON]
    return [scontrol, "update", f"nodename={node}", "state=drain", f"reason={text}"]


def drain(
    runner: CommandRunner,
    *,
    scontrol: str,
    slurm_conf: str,
    node: str,
    reason: str,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Completed:
    """Drain ``node`` with ``reason`` (prefixed ``firsthop:``)."""
    return runner(drain_argv(scontrol, node, reason), env=slurm_env(slurm_conf), timeout=timeout)


def admin_comment_argv(scontrol: str, job_id: str, text: str) -> list[str]:
    """``scontrol update jobid=N admincomment="..."`` (one line, at most 200 characters)."""
    return [scontrol, "update", f"jobid={job_id}", f"admincomment={' '.join(text.split())[:200]}"]


def set_admin_comment(
    runner: CommandRunner,
    *,
    scontrol: str,
    slurm_conf: str,
    job_id: str,
    text: str,
    timeout: float = 5.0,
) -> Completed:
    """Put ``text`` in the job's AdminComment (``scontrol show job`` shows it)."""
    return runner(
        admin_comment_argv(scontrol, job_id, text), env=slurm_env(slurm_conf), timeout=timeout
    )
