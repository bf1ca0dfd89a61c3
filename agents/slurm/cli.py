"""``firsthop-slurm``: the programs Slurm runs, one sub-command per hook.

``firsthop-slurm prolog-ctld|prolog|task-prolog|epilog|epilog-ctld --config FILE``. Slurm
starts hooks without arguments, so ``firsthopctl slurm install`` writes one wrapper per hook
that runs this with absolute paths. Each run:

- reads the configuration (:class:`~agents.slurm.config.HookConfig`);
- runs the hook under a deadline (``timeout_s`` per hook, SIGALRM);
- writes one line per action to the configured log file (and stderr, which slurmd keeps in
  its log when a Prolog fails);
- maps every outcome to an explicit exit code: 0 go on, 1 reject (bad comment, impossible
  shape, FAILED node), 2 firsthop outage with ``fail_mode=closed``. An outage with
  ``fail_mode=open`` logs a warning and exits 0, so a firsthop failure never takes the
  cluster down. No traceback ever reaches Slurm's logs.

``task-prolog`` takes ``--local-dir`` instead of ``--config`` and imports only the standard
library (it runs once per task; see :mod:`agents.slurm.taskprolog`). This module imports
nothing heavy at module level either: argparse, and each hook's modules when it runs.

Must not import ``scheduler``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from agents.slurm.hooks import HookContext

HOOK_NAMES = ("prolog-ctld", "prolog", "task-prolog", "epilog", "epilog-ctld")
EXIT_OK = 0
EXIT_REJECT = 1
EXIT_OUTAGE = 2
EXIT_USAGE = 64


class HookTimeoutError(Exception):
    """The hook ran past its deadline."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firsthop-slurm", description="firsthop's Slurm hooks (run by Slurm)."
    )
    sub = parser.add_subparsers(dest="hook", required=True)
    for name in HOOK_NAMES:
        cmd = sub.add_parser(name)
        if name == "task-prolog":
            cmd.add_argument("--local-dir", required=True)
            cmd.add_argument("--fail-closed", action="store_true")
        else:
            cmd.add_argument("--config", required=True, type=Path)
    return parser


class _LineLog:
    """Appends ``<time> firsthop-slurm <line>`` to a file and to stderr."""

    def __init__(self, path: str, err: TextIO) -> None:
        self._path = path
        self._err = err
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        text = f"{stamp} firsthop-slurm {' '.join(line.split())}"
        self.lines.append(text)
        self._err.write(text + "\n")
        try:
            with open(self._path, "a", encoding="utf-8") as log:
                log.write(text + "\n")
        except OSError as exc:
            self._err.write(f"firsthop-slurm: cannot write {self._path}: {exc}\n")


def run_hook(
    hook: str,
    config_path: Path,
    env: Mapping[str, str],
    err: TextIO,
    *,
    context_factory: Callable[..., HookContext] | None = None,
) -> int:
    """Run one hook (not ``task-prolog``) with its deadline and fail mode; return the exit code."""
    from agents.slurm.config import ConfigError, HookConfig

    try:
        config = HookConfig.load(config_path)
    except ConfigError as exc:
        err.write(f"firsthop-slurm {hook}: {exc.reason}: {exc} (fail open)\n")
        return EXIT_OK
    log = _LineLog(config.log_file, err)
    from agents.slurm.errors import OutageError
    from agents.slurm.hooks import HOOKS, HookContext

    factory = context_factory or HookContext
    ctx = factory(config=config, env=env, log=log)
    job = env.get("SLURM_JOB_ID", "")
    node = env.get("SLURMD_NODENAME", "ctld")
    try:
        with _Deadline(config.timeout(hook)):
            return HOOKS[hook](ctx)
    except Exception as exc:  # every failure: one log line, never a traceback
        if isinstance(exc, OutageError):
            reason = exc.reason
        elif isinstance(exc, HookTimeoutError):
            reason = "timeout"
        else:
            reason = "internal_error"
        what = str(exc) or type(exc).__name__
        if config.fail_mode == "closed":
            log(f"{hook} job={job} node={node} action=fail reason={reason}: {what}")
            return EXIT_OUTAGE
        log(f"{hook} job={job} node={node} action=fail_open warning reason={reason}: {what}")
        return EXIT_OK


class _Deadline:
    """SIGALRM-based deadline for the whole hook (the main thread only)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._old: signal.Handlers | Callable[[int, FrameType | None], object] | int | None = None

    def __enter__(self) -> None:
        def fire(signum: int, frame: FrameType | None) -> None:
            raise HookTimeoutError(f"hook ran past {self._seconds:g} s")

        self._old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self._seconds)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old or signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``firsthop-slurm``."""
    args = _parser().parse_args(argv)
    if args.hook == "task-prolog":
        from agents.slurm.taskprolog import task_prolog

        return task_prolog(
            args.local_dir,
            os.environ,
            sys.stdout,
            sys.stderr,
            fail_closed=args.fail_closed,
        )
    return run_hook(args.hook, args.config, os.environ, sys.stderr)


def entry() -> None:
    """``firsthop-slurm`` console script: exit with :func:`main`'s code."""
    sys.exit(main())
