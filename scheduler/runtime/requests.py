"""Questions the scheduler asks one agent and waits for: deep health checks and log reads.

Both go down the host's ``Connect`` stream as commands (:class:`RunHealthCheck`,
:class:`FetchLogs`, kept and resent by the :class:`~scheduler.runtime.agents.AgentHub` until
acknowledged) and come back as an answer matched by id: a ``HealthCheckResult`` report (kept
by the agent until acknowledged, so it survives a reconnect) or a ``LogChunk``. A caller waits
with a deadline; an agent that rejects the command fails the wait at once.

:func:`resume_node` is the operator's checked resume: a DRAINED node returns to service only
if its agent's deep health check passes (DRAINING nodes never left service and resume at
once). Nothing of this is durable: a scheduler restart fails the waiting calls, and the
operator asks again.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from firsthop.reasons import ErrorReason
from scheduler.core.events import Event, NodeResumeRequested
from scheduler.core.records import Allocation, Job, Node
from scheduler.core.states import QUEUED_JOB_STATES, NodeState
from scheduler.runtime.agents import FetchLogs, RunHealthCheck
from scheduler.runtime.runtime import Runtime
from topology.errors import FirsthopError

DEFAULT_LOG_BYTES: Final = 1024 * 1024
MAX_LOG_BYTES: Final = 4 * 1024 * 1024
LOG_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class HealthCheckReport:
    """What an agent's deep health check found."""

    node: str
    passed: bool
    summary: str
    report_json: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class LogRead:
    """Part of one rank's log, and where it came from."""

    host: str
    attempt: int
    offset: int
    size: int
    data: bytes


class NodeNotConnectedError(FirsthopError):
    """The node's agent has no open stream: it cannot be asked anything now."""

    status_code = "UNAVAILABLE"
    default_reason = ErrorReason.NODE_NOT_CONNECTED


class HealthCheckFailedError(FirsthopError):
    """The deep health check failed (or the agent cannot run one): the node stays out."""

    status_code = "FAILED_PRECONDITION"
    default_reason = ErrorReason.HEALTH_CHECK_FAILED


class AgentTimeoutError(FirsthopError):
    """The agent did not answer in time."""

    status_code = "DEADLINE_EXCEEDED"
    default_reason = ErrorReason.AGENT_TIMEOUT


class NoLogError(FirsthopError):
    """There is no such rank, or its host keeps no log of it."""

    status_code = "NOT_FOUND"
    default_reason = ErrorReason.NO_LOG


class AgentRequests:
    """Pending questions to agents, answered by id (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._ids = itertools.count(1)
        self._checks: dict[str, asyncio.Future[tuple[bool, str, str]]] = {}
        self._logs: dict[str, asyncio.Future[tuple[bool, int, int, bytes, str]]] = {}

    def _new_id(self, kind: str, node: str) -> str:
        return f"{kind}:{node}:{self._runtime.now().timestamp():.6f}:{next(self._ids)}"

    def _connected(self, node: str) -> None:
        if self._runtime.agents.link(node) is None:
            raise NodeNotConnectedError(f"the agent of {node} is not connected")

    # ------------------------------------------------------------------ deep health checks

    async def health_check(self, node: str, timeout_s: float) -> HealthCheckReport:
        """Run ``node``'s deep health check and wait for its result.

        Raises:
            NodeNotConnectedError; AgentTimeoutError (``health_check_timeout``);
            HealthCheckFailedError when the agent rejects the command.
        """
        self._connected(node)
        check_id = self._new_id("check", node)
        future: asyncio.Future[tuple[bool, str, str]] = asyncio.get_running_loop().create_future()
        self._checks[check_id] = future
        started = self._runtime.now()
        self._runtime.agents.send(RunHealthCheck(check_id, node, check_id))
        try:
            passed, summary, report = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise AgentTimeoutError(
                f"no deep health check result from {node} within {timeout_s:.0f} s",
                reason=ErrorReason.HEALTH_CHECK_TIMEOUT,
            ) from None
        finally:
            self._checks.pop(check_id, None)
        duration = (self._runtime.now() - started).total_seconds()
        return HealthCheckReport(node, passed, summary, report, duration)

    def health_check_result(self, check_id: str, passed: bool, summary: str, report: str) -> None:
        """An agent reported a deep health check (unknown ids are ignored: nobody waits)."""
        future = self._checks.get(check_id)
        if future is not None and not future.done():
            future.set_result((passed, summary, report))

    # ------------------------------------------------------------------ logs

    async def read_log(
        self,
        job_id: str,
        rank: int,
        *,
        offset: int = 0,
        max_bytes: int = 0,
        timeout_s: float = LOG_TIMEOUT_S,
    ) -> LogRead:
        """Part of ``rank``'s log of the job's current (or last) attempt, from its host.

        Raises:
            UnknownJobError; NoLogError (``unknown_rank``, ``no_log``); NodeNotConnectedError;
            AgentTimeoutError (``log_timeout``).
        """
        table, attempt = where_it_ran(await self._runtime.find_job(job_id))
        if table is None:
            raise NoLogError(f"job {job_id} has not run yet", reason=ErrorReason.NO_LOG)
        slot = next((s for s in table.ranks if s.rank == rank), None)
        if slot is None:
            raise NoLogError(f"job {job_id} has no rank {rank}", reason=ErrorReason.UNKNOWN_RANK)
        node = slot.host
        self._connected(node)
        request_id = self._new_id("logs", node)
        size = min(max_bytes or DEFAULT_LOG_BYTES, MAX_LOG_BYTES)
        future: asyncio.Future[tuple[bool, int, int, bytes, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._logs[request_id] = future
        self._runtime.agents.send(
            FetchLogs(request_id, node, request_id, job_id, attempt, rank, offset, size)
        )
        try:
            found, start, total, data, error = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise AgentTimeoutError(
                f"no log from {node} within {timeout_s:.0f} s", reason=ErrorReason.LOG_TIMEOUT
            ) from None
        finally:
            self._logs.pop(request_id, None)
        if not found:
            raise NoLogError(f"{node}: {error or 'no log'}")
        return LogRead(node, attempt, start, total, data)

    def log_chunk(
        self, request_id: str, *, found: bool, offset: int, size: int, data: bytes, error: str
    ) -> None:
        """An agent answered a log read (unknown ids are ignored)."""
        future = self._logs.get(request_id)
        if future is not None and not future.done():
            future.set_result((found, offset, size, data, error))

    # ------------------------------------------------------------------ rejections

    def rejected(self, command: RunHealthCheck | FetchLogs, message: str) -> None:
        """The agent refused a command: fail whoever waits for it."""
        if isinstance(command, RunHealthCheck):
            check = self._checks.get(command.check_id)
            if check is not None and not check.done():
                check.set_exception(
                    HealthCheckFailedError(f"{command.node} cannot run the check: {message}")
                )
            return
        log = self._logs.get(command.request_id)
        if log is not None and not log.done():
            log.set_exception(NoLogError(f"{command.node}: {message}"))


def where_it_ran(job: Job) -> tuple[Allocation | None, int]:
    """The rank table to read a job's logs from, and its attempt: the current one, else the
    last one (a requeued job's restart count already names its next attempt)."""
    if job.allocation is not None:
        return job.allocation, job.restarts
    if job.last_allocation is None:
        return None, job.restarts
    requeued = job.state in QUEUED_JOB_STATES
    return job.last_allocation, job.restarts - 1 if requeued and job.restarts else job.restarts


async def resume_node(
    runtime: Runtime,
    requests: AgentRequests,
    name: str,
    reason: str,
    *,
    skip_check: bool,
    timeout_s: float,
) -> tuple[Node, HealthCheckReport | None]:
    """Return a node to service; a DRAINED one only after its deep health check passed.

    Raises:
        UnknownNodeError; what :meth:`AgentRequests.health_check` raises; HealthCheckFailedError
        when the check fails (the node stays DRAINED; the error carries the check's summary);
        what the core refuses (a LOST or never-registered node).
    """
    node = runtime.get_node(name)
    report: HealthCheckReport | None = None
    if node.state is NodeState.DRAINED and not skip_check:
        report = await requests.health_check(name, timeout_s)
        if not report.passed:
            raise HealthCheckFailedError(
                f"{name} stays drained: deep health check failed: {report.summary}"
            )

    def resume(at: datetime) -> Event:
        return NodeResumeRequested(at=at, node=name, reason=reason)

    resumed = await runtime.apply(resume, lambda _: runtime.get_node(name))
    if resumed is None:  # pragma: no cover - apply returns the result
        raise RuntimeError("resume produced no node")
    return resumed, report
