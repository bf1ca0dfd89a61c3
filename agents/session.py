"""One agent's session with the scheduler: register, connect, heartbeat, run commands, report.

The protocol is the one documented in ``proto/firsthop/v1/agent.proto``. This module is the
agent side of it, shared by the simulated agents and the real per-host agent:

- **Registration and reconnection.** :meth:`AgentSession.run` registers, opens the
  ``Connect`` stream and sends a hello listing every running rank. When the stream breaks it
  waits (exponential backoff with jitter) and connects again; when the scheduler no longer
  knows the session (``unknown_session``, for example after a scheduler restart) it registers
  again at once. The backoff starts again from its initial delay after every success (an
  answered registration, a stream that carried a heartbeat, any message down), and never
  waits longer than a fifth of the heartbeat timeout the scheduler announced, so a restarted
  scheduler hears from every agent well before it could take one for lost.
  ``unknown_host`` and ``topology_mismatch`` are fatal: retrying cannot help.
- **Heartbeats** go out every interval the scheduler asked for, jittered, with the health
  verdict of an injected probe and the running ranks.
- **Commands** are applied at most once per ``command_id`` (and a rank at most once per job
  attempt), and every copy is acknowledged, so the scheduler can resend freely.
- **Reports** (ranks started, rank exited, checkpoint, health check result) wait in an outbox
  until the scheduler acknowledges them, and are sent again in order after a reconnect.
- **Deep health checks** (``RunHealthCheck``) run in the background through an injected
  :data:`HealthCheckFn`, one at a time; the result is a report. **Log reads** (``FetchLogs``)
  go through an injected :data:`LogReadFn` and are answered at once with a ``LogChunk``.

Every message up the stream goes through one writer task (gRPC allows one write at a time).

Must not import ``scheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from agents.launch import LogPiece
from agents.ranks import RankExecutor, RankExit, RankKey, RankLaunch, RankSupervisor
from agents.timing import Backoff, WaitFn, heartbeat_loop, wait_or_stop
from agents.transport import AgentStream, AgentTransport, SchedulerRejectedError, TransportError
from firsthop.v1 import admin_pb2, agent_pb2, topology_pb2
from topology.errors import FirsthopError

FATAL_REASONS: Final = frozenset(
    {"unknown_node", "unknown_host", "topology_mismatch", "gpu_count_mismatch", "invalid_input"}
)
"""Registration refusals that retrying cannot fix."""
REREGISTER_REASONS: Final = frozenset({"unknown_session", "session_replaced"})
PER_RANK_VARIABLES: Final = frozenset({"RANK", "LOCAL_RANK"})
"""Left out of the environment of a per-host process (its launcher sets them per worker)."""
STATUS_WAIT_S: Final = 5.0
"""How long to wait for a finished call's status after a failed write."""
RECONNECT_SHARE_OF_TIMEOUT: Final = 0.2
"""The longest reconnection delay, as a share of the scheduler's heartbeat timeout."""

HealthProbe = Callable[[], tuple["admin_pb2.Health.ValueType", str]]
"""Returns the host's health verdict and, when not healthy, why."""


@dataclass(frozen=True, slots=True)
class HealthCheckOutcome:
    """What a deep health check found, as the scheduler is told."""

    passed: bool
    summary: str
    report_json: str = ""


HealthCheckFn = Callable[[], Awaitable[HealthCheckOutcome]]
"""Runs the host's deep health check (must not block the event loop)."""
LogReadFn = Callable[[str, int, int, int, int], LogPiece]
"""``read(job_id, attempt, rank, offset, max_bytes)``: part of a rank's log."""

_log = logging.getLogger(__name__)


def always_healthy() -> tuple[admin_pb2.Health.ValueType, str]:
    """A :data:`HealthProbe` for simulated hosts."""
    return admin_pb2.HEALTH_HEALTHY, ""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who the agent says it is when it registers."""

    host: str
    gpus: int
    location: tuple[str, ...] = ()
    """Switch domains above the host, nearest first."""
    agent_version: str = ""
    agent_instance: str = ""
    """Changes whenever the agent process restarts."""
    address: str = ""
    """How ranks on other hosts reach this one (``MASTER_ADDR``); empty: the host name."""


@dataclass(slots=True)
class SessionOptions:
    """Tuning and test seams of a session."""

    wait: WaitFn = wait_or_stop
    rng: random.Random = field(default_factory=random.Random)
    backoff: Backoff | None = None
    heartbeat_jitter: float = 0.1
    health: HealthProbe = always_healthy
    remembered_commands: int = 4096
    """How many applied command ids are kept to recognise resent copies."""
    health_check: HealthCheckFn | None = None
    """Runs ``RunHealthCheck`` commands; ``None`` rejects them."""
    logs: LogReadFn | None = None
    """Serves ``FetchLogs`` commands; ``None`` answers that there is no log."""


class FatalAgentError(FirsthopError):
    """The scheduler refused this agent for a reason retrying cannot fix."""

    status_code = "FAILED_PRECONDITION"
    default_reason = "agent_refused"


class AgentSession:
    """The agent side of AgentService for one host (see the module docstring)."""

    def __init__(
        self,
        identity: AgentIdentity,
        transport: AgentTransport,
        executor: RankExecutor,
        options: SessionOptions | None = None,
    ) -> None:
        self.identity = identity
        self._transport = transport
        self._opts = options or SessionOptions()
        self._backoff = self._opts.backoff or Backoff(rng=self._opts.rng)
        self.supervisor = RankSupervisor(
            executor,
            on_started=self._ranks_started,
            on_exited=self._rank_exited,
            on_checkpoint=self._checkpointed,
        )
        self._session_id: str | None = None
        self._interval_s = 5.0
        self._max_delay_s: float | None = None
        """Ceiling of reconnection delays from the announced heartbeat timeout (if any)."""
        self._fresh_session = False
        """True between a registration and the first stream that proved it works."""
        self._outbox: OrderedDict[str, agent_pb2.Report] = OrderedDict()
        self._applied: OrderedDict[str, None] = OrderedDict()
        self._report_seq = 0
        self._heartbeat_seq = 0
        self._heartbeat_seq_on_stream = 0
        self._queue: asyncio.Queue[agent_pb2.AgentMessage] | None = None
        self.connected = asyncio.Event()
        """Set while a stream is open and the hello was sent (tests wait on it)."""
        self.connections = 0
        """How many streams this session has opened."""
        self._check: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ main loop

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; reconnect after failures.

        Raises:
            FatalAgentError: the scheduler refused the host (unknown host, topology mismatch).
        """
        try:
            await self._run(stop)
        finally:
            if self._check is not None:
                self._check.cancel()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self._session_id is None:
                    await self._register()
                await self._serve(stop)
            except SchedulerRejectedError as exc:
                if exc.reason in FATAL_REASONS:
                    raise FatalAgentError(
                        f"{self.identity.host}: {exc.message}", reason=exc.reason
                    ) from None
                _log.info("%s: stream ended: %s: %s", self.identity.host, exc.reason, exc)
                if exc.reason in REREGISTER_REASONS:
                    self._session_id = None
                    if not self._fresh_session:
                        # The scheduler restarted (or another stream took over): register
                        # again at once; waiting would only bring the heartbeat timeout nearer.
                        continue
            except TransportError as exc:
                _log.debug("%s: %s", self.identity.host, exc)
            except Exception:  # never let one broken stream kill the agent: reconnect
                _log.warning(
                    "%s: unexpected error on the stream", self.identity.host, exc_info=True
                )
            if stop.is_set() or await self._opts.wait(stop, self._reconnect_delay()):
                break

    def _reconnect_delay(self) -> float:
        delay = self._backoff.next_delay()
        if self._max_delay_s is not None:
            delay = min(delay, self._max_delay_s)
        return delay

    async def _register(self) -> None:
        ident = self.identity
        response = await self._transport.register(
            agent_pb2.RegisterNodeRequest(
                host=ident.host,
                gpus=[topology_pb2.Gpu(index=i, rail=i) for i in range(ident.gpus)],
                location=list(ident.location),
                agent_version=ident.agent_version,
                agent_instance=ident.agent_instance,
                address=ident.address,
            )
        )
        self._session_id = response.session_id
        self._fresh_session = True
        self._backoff.reset()  # the scheduler answered
        if response.heartbeat_interval_ms:
            self._interval_s = response.heartbeat_interval_ms / 1000.0
        if response.heartbeat_timeout_ms:
            self._max_delay_s = response.heartbeat_timeout_ms / 1000.0 * RECONNECT_SHARE_OF_TIMEOUT

    async def _serve(self, stop: asyncio.Event) -> None:
        stream = self._transport.connect()
        queue: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        hello = agent_pb2.ConnectHello(
            host=self.identity.host, session_id=self._session_id or "", running=self._running()
        )
        queue.put_nowait(agent_pb2.AgentMessage(hello=hello))
        for report in self._outbox.values():
            queue.put_nowait(agent_pb2.AgentMessage(report=report))
        self._queue = queue
        self._heartbeat_seq_on_stream = 0
        beat_stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self._write_all(stream, queue), name="agent writer"),
            asyncio.create_task(self._read_all(stream), name="agent reader"),
            asyncio.create_task(
                heartbeat_loop(
                    self._send_heartbeat,
                    beat_stop,
                    interval_s=self._interval_s,
                    jitter=self._opts.heartbeat_jitter,
                    rng=self._opts.rng,
                    wait=self._opts.wait,
                ),
                name="agent heartbeat",
            ),
            asyncio.create_task(stop.wait(), name="agent stop"),
        ]
        self.connections += 1
        self.connected.set()
        reader = tasks[1]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed and reader not in done:
                # A write failed because the call ended: the reader gets the call's status,
                # which says why (for example unknown_session).
                await asyncio.wait({reader}, timeout=STATUS_WAIT_S)
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    failed = [reader]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            self.connected.clear()
            self._queue = None
            beat_stop.set()
            stream.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, FirsthopError):
                    await task

    async def _write_all(
        self, stream: AgentStream, queue: asyncio.Queue[agent_pb2.AgentMessage]
    ) -> None:
        while True:
            message = await queue.get()
            await stream.write(message)

    async def _read_all(self, stream: AgentStream) -> None:
        while True:
            message = await stream.read()
            if message is None:
                raise TransportError("the scheduler closed the stream")
            # A message from the scheduler proves the stream works.
            self._backoff.reset()
            self._fresh_session = False
            kind = message.WhichOneof("body")
            if kind == "command":
                self._send(agent_pb2.AgentMessage(ack=self.handle_command(message.command)))
            elif kind == "report_ack":
                self._outbox.pop(message.report_ack.report_id, None)

    def _send(self, message: agent_pb2.AgentMessage) -> None:
        if self._queue is not None:
            self._queue.put_nowait(message)

    async def _send_heartbeat(self) -> None:
        if self._queue is not None and self._heartbeat_seq_on_stream > 0:
            # A heartbeat interval after the hello the stream still stands: connected.
            self._backoff.reset()
            self._fresh_session = False
        self._heartbeat_seq_on_stream += 1
        self._heartbeat_seq += 1
        health, detail = self._opts.health()
        beat = agent_pb2.Heartbeat(
            seq=self._heartbeat_seq,
            sent_at=_now(),
            health=health,
            health_detail=detail,
            running=self._running(),
        )
        self._send(agent_pb2.AgentMessage(heartbeat=beat))

    def _running(self) -> list[agent_pb2.RunningRanks]:
        return [
            agent_pb2.RunningRanks(job_id=job_id, attempt=attempt, ranks=ranks)
            for (job_id, attempt), ranks in self.supervisor.running().items()
        ]

    # ------------------------------------------------------------------ commands

    def handle_command(self, command: agent_pb2.Command) -> agent_pb2.CommandAck:
        """Apply a command at most once per id; the acknowledgement to send back."""
        cid = command.command_id
        if cid in self._applied:
            return agent_pb2.CommandAck(command_id=cid, status=agent_pb2.COMMAND_STATUS_DUPLICATE)
        kind = command.WhichOneof("body")
        status, message = agent_pb2.COMMAND_STATUS_APPLIED, ""
        if kind == "start_ranks":
            status, message = self._start(command.start_ranks)
        elif kind == "stop_ranks":
            stop = command.stop_ranks
            count = self.supervisor.stop(stop.job_id, stop.attempt, list(stop.ranks), stop.grace_s)
            message = f"stopping {count} ranks"
        elif kind == "signal_ranks":
            sig = command.signal_ranks
            count = self.supervisor.signal(sig.job_id, sig.attempt, list(sig.ranks), sig.signal)
            message = f"signalled {count} ranks"
        elif kind == "run_health_check":
            status, message = self._start_check(command.run_health_check.check_id)
        elif kind == "fetch_logs":
            self._send(agent_pb2.AgentMessage(log_chunk=self._read_log(command.fetch_logs)))
            message = "log read"
        else:
            status, message = agent_pb2.COMMAND_STATUS_REJECTED, f"unknown command {kind!r}"
        self._remember(cid)
        return agent_pb2.CommandAck(command_id=cid, status=status, message=message)

    def _start(self, start: agent_pb2.StartRanks) -> tuple[agent_pb2.CommandStatus.ValueType, str]:
        bad = [r.gpu for r in start.ranks if r.gpu >= self.identity.gpus]
        if bad:
            return agent_pb2.COMMAND_STATUS_REJECTED, f"no GPUs {bad} on {self.identity.host}"
        launches = [
            RankLaunch(
                key=RankKey(start.job_id, start.attempt, r.rank),
                argv=tuple(start.argv),
                env={**start.env, **r.env},
                gpu=r.gpu,
                local_rank=r.local_rank,
            )
            for r in start.ranks
        ]
        if start.per_host and launches:
            # One process (torchrun, say) for the host's ranks: it sets RANK and LOCAL_RANK
            # of the workers it starts itself.
            first = launches[0]
            env = {k: v for k, v in first.env.items() if k not in PER_RANK_VARIABLES}
            covers = tuple(launch.key.rank for launch in launches)
            launches = [replace(first, env=env, covers=covers)]
        started = self.supervisor.start(launches)
        if not started and launches:
            return agent_pb2.COMMAND_STATUS_DUPLICATE, "ranks already started"
        return agent_pb2.COMMAND_STATUS_APPLIED, f"started {len(started)} ranks"

    def _start_check(self, check_id: str) -> tuple[agent_pb2.CommandStatus.ValueType, str]:
        run = self._opts.health_check
        if run is None:
            return agent_pb2.COMMAND_STATUS_REJECTED, "this agent runs no deep health checks"
        if self._check is not None and not self._check.done():
            return agent_pb2.COMMAND_STATUS_REJECTED, "a deep health check is already running"
        self._check = asyncio.create_task(self._run_check(check_id, run), name="deep check")
        return agent_pb2.COMMAND_STATUS_APPLIED, "deep health check started"

    async def _run_check(self, check_id: str, run: HealthCheckFn) -> None:
        try:
            outcome = await run()
        except Exception as exc:  # a broken check is a failed check, not a dead agent
            _log.warning("%s: deep health check failed to run", self.identity.host, exc_info=True)
            outcome = HealthCheckOutcome(False, f"the check could not run: {exc}")
        result = agent_pb2.HealthCheckResult(
            check_id=check_id,
            passed=outcome.passed,
            summary=outcome.summary,
            report_json=outcome.report_json,
            at=_now(),
        )
        self._report(agent_pb2.Report(health_check=result))

    def _read_log(self, fetch: agent_pb2.FetchLogs) -> agent_pb2.LogChunk:
        chunk = agent_pb2.LogChunk(request_id=fetch.request_id)
        if self._opts.logs is None:
            chunk.error = f"{self.identity.host} keeps no rank logs"
            return chunk
        piece = self._opts.logs(
            fetch.job_id, fetch.attempt, fetch.rank, fetch.offset, fetch.max_bytes
        )
        chunk.found = piece.found
        chunk.offset = piece.offset
        chunk.data = piece.data
        chunk.size = piece.size
        chunk.error = piece.error
        return chunk

    def _remember(self, command_id: str) -> None:
        self._applied[command_id] = None
        while len(self._applied) > self._opts.remembered_commands:
            self._applied.popitem(last=False)

    # ------------------------------------------------------------------ reports

    def _report(self, report: agent_pb2.Report) -> None:
        self._report_seq += 1
        report.report_id = f"{self.identity.agent_instance}-{self._report_seq}"
        self._outbox[report.report_id] = report
        self._send(agent_pb2.AgentMessage(report=report))

    def _ranks_started(self, job_id: str, attempt: int, ranks: Sequence[int]) -> None:
        started = agent_pb2.RanksStarted(job_id=job_id, attempt=attempt, ranks=ranks, at=_now())
        self._report(agent_pb2.Report(ranks_started=started))

    def _rank_exited(self, key: RankKey, result: RankExit) -> None:
        exited = agent_pb2.RankExited(
            job_id=key.job_id,
            attempt=key.attempt,
            rank=key.rank,
            reason=result.reason,
            message=result.message,
            at=_now(),
        )
        if result.exit_code is not None:
            exited.exit_code = result.exit_code
        if result.signal is not None:
            exited.signal = result.signal
        self._report(agent_pb2.Report(rank_exited=exited))

    def _checkpointed(self, key: RankKey, step: int, path: str) -> None:
        checkpoint = agent_pb2.CheckpointReported(
            job_id=key.job_id, attempt=key.attempt, rank=key.rank, step=step, path=path, at=_now()
        )
        self._report(agent_pb2.Report(checkpoint=checkpoint))

    @property
    def unacknowledged_reports(self) -> int:
        """Reports the scheduler has not acknowledged yet."""
        return len(self._outbox)


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp
