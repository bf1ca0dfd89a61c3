"""Running a job's ranks on one host: the executor seam, a simulated and a process executor,
and the supervisor that tracks what runs.

- :class:`RankExecutor` runs one rank to its end and says how it ended. Two implementations:
  :class:`SimulatedExecutor` (work of a given duration, for tests, the demo and benchmarks)
  and :class:`agents.launch.ProcessExecutor` (a real local process, argv list only, SIGTERM
  then SIGKILL to its process group after a grace period).
- :class:`RankSupervisor` starts ranks (at most once per job attempt and rank), stops and
  signals them, and calls back when ranks start, exit or checkpoint. The agent session turns
  those callbacks into reports.

Time enters only through an injected wait function, so tests never sleep.

Must not import ``scheduler`` or the generated protos (the session translates).
"""

from __future__ import annotations

import asyncio
import signal as signals
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from agents.timing import WaitFn, wait_or_stop
from firsthop.reasons import RankExitReason

SIM_DURATION_ENV: Final = "FIRSTHOP_SIM_DURATION_S"
"""Seconds a simulated rank runs (default: the executor's default duration)."""
SIM_EXIT_CODE_ENV: Final = "FIRSTHOP_SIM_EXIT_CODE"
"""Exit code a simulated rank ends with (default 0)."""
SIM_CHECKPOINT_ENV: Final = "FIRSTHOP_SIM_CHECKPOINT_S"
"""Seconds between the simulated checkpoints of rank 0 (default: none)."""


@dataclass(frozen=True, slots=True)
class RankKey:
    """One rank of one attempt of a job."""

    job_id: str
    attempt: int
    rank: int


@dataclass(frozen=True, slots=True)
class RankLaunch:
    """Everything needed to start one rank."""

    key: RankKey
    argv: tuple[str, ...]
    env: Mapping[str, str]
    """The full environment of the rank (job env, launcher variables, rank variables)."""
    gpu: int
    local_rank: int
    covers: tuple[int, ...] = ()
    """Every rank this one process stands for (a per-host launch such as torchrun, keyed by
    the host's first rank); empty: just ``key.rank``."""
    user: str = ""
    """The job's user (the scheduler's authenticated submitter)."""

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks this process runs."""
        return self.covers or (self.key.rank,)


@dataclass(frozen=True, slots=True)
class RankExit:
    """How a rank ended."""

    exit_code: int | None
    signal: int | None = None
    reason: RankExitReason = RankExitReason.COMPLETED
    message: str = ""


_SIGTERM: Final = int(signals.SIGTERM)


@dataclass(slots=True)
class RankControl:
    """What the supervisor can ask of a running rank."""

    checkpoint: Callable[[int, str], None]
    """Call with (step, path) when the rank wrote a checkpoint."""
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    grace_s: float = 0.0
    signals: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    stop_signal: int = _SIGTERM
    """The signal a stop sends first (the job's checkpoint signal on a planned stop)."""
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a forced stop (grace 0) that arrives while a stop is under way: SIGKILL now."""

    def request_stop(self, grace_s: float, sig: int = _SIGTERM) -> None:
        """Ask the rank to stop with ``sig``, killing it after ``grace_s`` seconds.

        Once a stop is under way a repeated one changes nothing, but a forced one (``grace_s``
        0): that kills the rank at once (the scheduler forces a stop whose grace it does not
        want to wait out, e.g. a cancel while a checkpoint request with no deadline waits).
        """
        if self.stop_requested.is_set():
            if grace_s <= 0:
                self.killed.set()
            return
        self.grace_s = grace_s
        self.stop_signal = sig
        self.stop_requested.set()


class RankExecutor(Protocol):
    """Runs one rank until it ends."""

    async def run(self, launch: RankLaunch, control: RankControl) -> RankExit:
        """Run the rank; return how it ended (never raise for the rank's own failure)."""
        ...


class SimulatedExecutor:
    """Simulated work: the rank "runs" for ``FIRSTHOP_SIM_DURATION_S`` seconds.

    It ends with ``FIRSTHOP_SIM_EXIT_CODE`` (default 0), or ``stopped`` (signal 15) when
    stopped first. With ``FIRSTHOP_SIM_CHECKPOINT_S``, rank 0 reports a checkpoint every that
    many seconds.
    """

    def __init__(self, default_duration_s: float = 60.0, wait: WaitFn = wait_or_stop) -> None:
        self._default = default_duration_s
        self._wait = wait

    async def run(self, launch: RankLaunch, control: RankControl) -> RankExit:
        env = launch.env
        try:
            remaining = float(env.get(SIM_DURATION_ENV, self._default))
            code = int(env.get(SIM_EXIT_CODE_ENV, "0"))
            every = float(env.get(SIM_CHECKPOINT_ENV, "0"))
        except ValueError as exc:
            return RankExit(
                None, reason=RankExitReason.START_FAILED, message=f"bad simulation env: {exc}"
            )
        step = 0
        while True:
            segment = min(every, remaining) if every > 0 and launch.key.rank == 0 else remaining
            if await self._wait(control.stop_requested, max(segment, 0.0)):
                return RankExit(
                    None, signals.SIGTERM, RankExitReason.STOPPED, "stopped before the end"
                )
            remaining -= segment
            if remaining <= 0:
                break
            step += 1
            control.checkpoint(step, f"sim://{launch.key.job_id}/step-{step}")
        reason = RankExitReason.COMPLETED if code == 0 else RankExitReason.FAILED
        return RankExit(code, None, reason)


StartedFn = Callable[[str, int, Sequence[int]], None]
ExitedFn = Callable[[RankKey, RankExit], None]
CheckpointFn = Callable[[RankKey, int, str], None]


class RankSupervisor:
    """The ranks running on one host; starts each (job, attempt, rank) at most once."""

    def __init__(
        self,
        executor: RankExecutor,
        *,
        on_started: StartedFn,
        on_exited: ExitedFn,
        on_checkpoint: CheckpointFn,
    ) -> None:
        self._executor = executor
        self._on_started = on_started
        self._on_exited = on_exited
        self._on_checkpoint = on_checkpoint
        self._running: dict[RankKey, tuple[asyncio.Task[None], RankControl]] = {}
        self._covers: dict[RankKey, tuple[int, ...]] = {}
        self._seen: set[RankKey] = set()

    def running(self) -> dict[tuple[str, int], list[int]]:
        """Running ranks by (job id, attempt), ranks ascending."""
        out: dict[tuple[str, int], list[int]] = {}
        for key in self._running:
            out.setdefault((key.job_id, key.attempt), []).extend(self._covers[key])
        return {k: sorted(v) for k, v in sorted(out.items())}

    def start(self, launches: Sequence[RankLaunch]) -> list[int]:
        """Start the launches not started before; return the ranks started now."""
        fresh = [launch for launch in launches if launch.key not in self._seen]
        for launch in fresh:
            key = launch.key
            self._seen.add(key)
            control = RankControl(checkpoint=self._checkpointer(key))
            task = asyncio.create_task(self._run(launch, control), name=f"rank {key}")
            self._running[key] = (task, control)
            self._covers[key] = launch.ranks
        started = [rank for launch in fresh for rank in launch.ranks]
        if fresh:
            first = fresh[0].key
            self._on_started(first.job_id, first.attempt, started)
        return started

    def stop(
        self,
        job_id: str,
        attempt: int,
        ranks: Sequence[int],
        grace_s: float,
        sig: int = signals.SIGTERM,
    ) -> int:
        """Ask ranks (all of the attempt when ``ranks`` is empty) to stop with ``sig``, then
        SIGKILL after ``grace_s``; return how many."""
        count = 0
        for key, (_, control) in list(self._running.items()):
            if self._matches(key, job_id, attempt, ranks):
                control.request_stop(grace_s, sig)
                count += 1
        return count

    def signal(self, job_id: str, attempt: int, ranks: Sequence[int], sig: int) -> int:
        """Queue a signal for ranks (all of the attempt when ``ranks`` is empty)."""
        count = 0
        for key, (_, control) in self._running.items():
            if self._matches(key, job_id, attempt, ranks):
                control.signals.put_nowait(sig)
                count += 1
        return count

    async def stop_all(self, grace_s: float) -> None:
        """Stop every rank and wait for them (agent shutdown)."""
        tasks = [task for task, _ in self._running.values()]
        for _, control in self._running.values():
            control.request_stop(grace_s)
        await asyncio.gather(*tasks, return_exceptions=True)

    def cancel_all(self) -> list[Awaitable[None]]:
        """Cancel every rank task without reports (the agent process is going away)."""
        tasks = [task for task, _ in self._running.values()]
        for task in tasks:
            task.cancel()
        self._running.clear()
        self._covers.clear()
        return list(tasks)

    def _checkpointer(self, key: RankKey) -> Callable[[int, str], None]:
        def report(step: int, path: str) -> None:
            self._on_checkpoint(key, step, path)

        return report

    async def _run(self, launch: RankLaunch, control: RankControl) -> None:
        try:
            result = await self._executor.run(launch, control)
        except Exception as exc:  # a broken executor must not kill the agent
            result = RankExit(
                None, reason=RankExitReason.START_FAILED, message=f"{type(exc).__name__}: {exc}"
            )
        self._running.pop(launch.key, None)
        self._covers.pop(launch.key, None)
        key = launch.key
        for rank in launch.ranks:
            self._on_exited(RankKey(key.job_id, key.attempt, rank), result)

    def _matches(self, key: RankKey, job_id: str, attempt: int, ranks: Sequence[int]) -> bool:
        if key.job_id != job_id or key.attempt != attempt:
            return False
        return not ranks or any(rank in ranks for rank in self._covers.get(key, (key.rank,)))
