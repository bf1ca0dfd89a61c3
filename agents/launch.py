"""Real rank processes on one host: the process-runner seam, the process executor, rank logs.

- :class:`ProcessRunner` starts one rank's process and hands back a :class:`RankProcess`
  (wait for it, signal its process group). :class:`LocalProcessRunner` is the real one: argv
  list (never a shell), the rank's environment over the agent's, its own session and process
  group (``start_new_session=True``), stdout and stderr appended to one log file. Tests inject
  a fake runner.
- :class:`ProcessExecutor` is the :class:`~agents.ranks.RankExecutor` for real ranks: it starts
  the process, forwards signals to its process group, stops it with the stop's signal
  (SIGTERM, or the job's checkpoint signal on a planned stop) then SIGKILL after the grace
  period (the whole group), and once the leader exits kills whatever is left of the
  group (dataloader workers, a wrapper's children) so no stray keeps GPUs busy.
- Logs: one file per rank and attempt, ``LOG_DIR/JOB/attempt-N/rank-R.log``
  (:func:`rank_log_path`), read back in pieces by :func:`read_rank_log` (``firsthop logs``).
  Whatever the job id, the path stays inside ``LOG_DIR`` (the id becomes one safe path
  component, and the resolved path is checked).
- Accounts: given a :class:`~agents.accounts.UserMap` (an agent running as root with mutual
  TLS), each rank runs as its job user's local account (:mod:`agents.accounts`); its attempt
  directory is handed to that account so it can write its checkpoint report.
- Checkpoint reports: rank 0 gets ``FIRSTHOP_CHECKPOINT_REPORT``, a file path on this host.
  After each complete checkpoint the program writes ``STEP PATH`` into it (atomically:
  write a temporary file, then rename); the executor polls it and the agent reports the
  checkpoint to the scheduler, which counts the work up to it as safe (ETTR).

Time enters only through the injected wait function. Must not import ``scheduler`` or the
generated protos.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as signals
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from agents.accounts import Account, AccountError, UserMap
from agents.ranks import RankControl, RankExit, RankLaunch
from agents.timing import WaitFn, wait_or_stop
from firsthop.reasons import RankExitReason

CHECKPOINT_REPORT_ENV: Final = "FIRSTHOP_CHECKPOINT_REPORT"
"""Rank 0's file for ``STEP PATH`` lines announcing complete checkpoints."""
CHECKPOINT_POLL_S: Final = 1.0
"""How often the checkpoint report file is looked at."""
MAX_LOG_READ_BYTES: Final = 4 * 1024 * 1024
"""Most bytes :func:`read_rank_log` returns at once."""
DEFAULT_RANK_ENV: Final = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PYTHONUNBUFFERED": "1"}
"""Set for every rank unless the job sets them: CUDA numbers GPUs as NVML does (so
``CUDA_VISIBLE_DEVICES`` names the GPUs the probes watch), and Python output reaches the log
as it is printed."""


class RankProcess(Protocol):
    """A started rank process."""

    @property
    def pid(self) -> int:
        """Process id (also its process group id)."""
        ...

    async def wait(self) -> int:
        """Wait for the process; its return code (negative: killed by that signal)."""
        ...

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group (nothing if it is gone)."""
        ...


class ProcessRunner(Protocol):
    """Starts rank processes."""

    async def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        account: Account | None = None,
    ) -> RankProcess:
        """Start ``argv`` with exactly ``env``, output appended to ``log_path`` (as
        ``account`` when given).

        Raises:
            OSError: the program could not be started.
        """
        ...


class _LocalProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def wait(self) -> int:
        return await self._proc.wait()

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)


class LocalProcessRunner:
    """The real :class:`ProcessRunner`: a new session and process group per rank."""

    async def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        account: Account | None = None,
    ) -> RankProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        as_account: dict[str, object] = {}
        if account is not None:
            os.chown(log_path.parent, account.uid, account.gid)
            as_account = {
                "user": account.uid,
                "group": account.gid,
                "extra_groups": list(account.groups),
            }
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                **as_account,  # type: ignore[arg-type]
            )
        return _LocalProcess(proc)


def _log_start_failure(log_path: Path, message: str) -> None:
    """Leave the reason a rank could not start in its log, where ``firsthop logs`` looks."""
    with contextlib.suppress(OSError):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8", errors="replace") as log:
            log.write(f"firsthop-agent: the rank could not be started: {message}\n")


def rank_log_path(log_dir: Path, job_id: str, attempt: int, rank: int) -> Path:
    """Where the output of ``rank`` of ``job_id``'s ``attempt`` goes (always inside
    ``log_dir``).

    Raises:
        ValueError: a negative attempt or rank (never made by the scheduler).
    """
    if attempt < 0 or rank < 0:
        raise ValueError(f"attempt {attempt} and rank {rank} must be >= 0")
    path = log_dir / _safe(job_id) / f"attempt-{attempt}" / f"rank-{rank}.log"
    _check_inside(log_dir, path)
    return path


def _check_inside(root: Path, path: Path) -> None:
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} is outside {root}")


def checkpoint_report_path(log_dir: Path, job_id: str, attempt: int) -> Path:
    """The checkpoint report file of ``job_id``'s ``attempt`` (rank 0 writes it)."""
    return log_dir / _safe(job_id) / f"attempt-{attempt}" / "checkpoint"


def _safe(name: str) -> str:
    """A path component for an id (ids are scheduler-made, but never trust a path)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return cleaned.lstrip(".") or "_"


@dataclass(frozen=True, slots=True)
class LogPiece:
    """Part of a rank's log file."""

    found: bool
    offset: int = 0
    data: bytes = b""
    size: int = 0
    error: str = ""


def read_rank_log(
    log_dir: Path, job_id: str, attempt: int, rank: int, *, offset: int, max_bytes: int
) -> LogPiece:
    """Read up to ``max_bytes`` of a rank's log from ``offset`` (negative: from the end)."""
    path = rank_log_path(log_dir, job_id, attempt, rank)
    limit = max(0, min(max_bytes or MAX_LOG_READ_BYTES, MAX_LOG_READ_BYTES))
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = max(0, size + offset) if offset < 0 else min(offset, size)
            handle.seek(start)
            data = handle.read(limit)
    except FileNotFoundError:
        return LogPiece(False, error=f"no log of rank {rank} of {job_id} attempt {attempt}")
    except OSError as exc:
        return LogPiece(False, error=f"cannot read the log: {exc.strerror}")
    return LogPiece(True, start, data, size)


def parse_checkpoint_report(text: str) -> tuple[int, str] | None:
    """``(step, path)`` of a checkpoint report's ``STEP PATH`` line, or ``None``."""
    step, _, path = text.strip().partition(" ")
    if not step.isdigit():
        return None
    return int(step), path.strip()


class ProcessExecutor:
    """Real local processes per rank (see the module docstring).

    Args:
        log_dir: root of the rank logs (and checkpoint report files).
        runner: starts the processes (inject a fake in tests).
        wait: the wait function (grace periods, checkpoint polling).
        base_env: the environment ranks inherit before their own (default: the agent's).
        users: run each rank as its job user's account (``None``: as the agent).
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        runner: ProcessRunner | None = None,
        wait: WaitFn = wait_or_stop,
        base_env: Mapping[str, str] | None = None,
        users: UserMap | None = None,
    ) -> None:
        self.log_dir = log_dir
        self._users = users
        self._runner = runner or LocalProcessRunner()
        self._wait = wait
        self._base_env = dict(os.environ if base_env is None else base_env)

    def environment(self, launch: RankLaunch) -> dict[str, str]:
        """The full environment of a rank: agent's, defaults, job's and rank's variables."""
        env = {**self._base_env, **DEFAULT_RANK_ENV, **launch.env}
        if launch.key.rank == 0:
            key = launch.key
            env[CHECKPOINT_REPORT_ENV] = str(
                checkpoint_report_path(self.log_dir, key.job_id, key.attempt)
            )
        return env

    async def run(self, launch: RankLaunch, control: RankControl) -> RankExit:
        key = launch.key
        log_path = rank_log_path(self.log_dir, key.job_id, key.attempt, key.rank)
        env = self.environment(launch)
        try:
            if self._users is None:
                proc = await self._runner.spawn(launch.argv, env, log_path)
            else:
                account = self._users.account_of(launch.user)
                env.update(account.environment())
                proc = await self._runner.spawn(launch.argv, env, log_path, account)
        except AccountError as exc:
            _log_start_failure(log_path, exc.message)
            return RankExit(None, reason=RankExitReason.START_FAILED, message=exc.message)
        except (OSError, ValueError) as exc:  # ValueError: text the OS cannot take (NUL)
            message = f"{launch.argv[:1]}: {exc}"
            _log_start_failure(log_path, message)
            return RankExit(None, reason=RankExitReason.START_FAILED, message=message)
        watcher: asyncio.Task[None] | None = None
        report = env.get(CHECKPOINT_REPORT_ENV)
        seen: list[tuple[int, str]] = []
        if report is not None:
            watcher = asyncio.create_task(self._watch_checkpoints(Path(report), control, seen))
        try:
            return await self._supervise(proc, control)
        finally:
            proc.signal_group(signals.SIGKILL)  # stragglers of the group, if any
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if report is not None:
                # The checkpoint a program saves on its way out (checkpoint on request) is
                # written just before it exits: read the report once more.
                _read_report(Path(report), control, seen)

    async def _supervise(self, proc: RankProcess, control: RankControl) -> RankExit:
        done = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(control.stop_requested.wait())
        sig: asyncio.Future[int] | None = None
        try:
            while not done.done():
                sig = asyncio.ensure_future(control.signals.get())
                finished, _ = await asyncio.wait(
                    {done, stop, sig}, return_when=asyncio.FIRST_COMPLETED
                )
                if sig in finished:
                    proc.signal_group(sig.result())
                if stop in finished and not done.done():
                    return await self._terminate(proc, done, control)
        finally:
            waiters = [f for f in (stop, sig) if f is not None and not f.done()]
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return exit_of(done.result(), stopped=False)

    async def _terminate(
        self, proc: RankProcess, done: asyncio.Future[int], control: RankControl
    ) -> RankExit:
        proc.signal_group(control.stop_signal)
        if control.grace_s > 0:
            # Woken by the exit or by a forced stop; otherwise the grace runs out.
            wake = asyncio.Event()
            done.add_done_callback(lambda _: wake.set())
            forced = asyncio.ensure_future(control.killed.wait())
            forced.add_done_callback(lambda _: wake.set())
            try:
                await self._wait(wake, control.grace_s)
            finally:
                forced.cancel()
        if not done.done():
            proc.signal_group(signals.SIGKILL)
        return exit_of(await done, stopped=True)

    async def _watch_checkpoints(
        self, path: Path, control: RankControl, seen: list[tuple[int, str]]
    ) -> None:
        never = asyncio.Event()
        while True:
            await self._wait(never, CHECKPOINT_POLL_S)
            _read_report(path, control, seen)


def _read_report(path: Path, control: RankControl, seen: list[tuple[int, str]]) -> None:
    """Pass on the checkpoint in the report file at ``path`` if it is new (``seen`` holds the
    last one passed on)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    parsed = parse_checkpoint_report(text)
    if parsed is not None and (not seen or parsed != seen[-1]):
        seen[:] = [parsed]
        control.checkpoint(*parsed)


def exit_of(returncode: int, *, stopped: bool) -> RankExit:
    """How a rank ended, from its process's return code."""
    if returncode < 0:
        killed = RankExitReason.STOPPED if stopped else RankExitReason.FAILED
        return RankExit(None, -returncode, killed)
    if stopped:
        reason = RankExitReason.STOPPED
    else:
        reason = RankExitReason.COMPLETED if returncode == 0 else RankExitReason.FAILED
    return RankExit(returncode, None, reason)
