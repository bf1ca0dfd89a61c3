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
  ``unknown_node`` and ``topology_mismatch`` are fatal: retrying cannot help.
- **Heartbeats** go out every interval the scheduler asked for, jittered, with the health
  verdict of an injected probe and the running ranks.
- **Commands** are applied at most once per ``command_id`` (and a rank at most once per job
  attempt), and every copy is acknowledged, so the scheduler can resend freely.
- **Fencing.** Every command carries the fencing epoch of the leader that sent it, and a
  registration answer the leader's epoch; the session keeps the newest epoch it has seen and
  refuses (acknowledges as rejected, applies nothing) any command of an older one, so a
  deposed scheduler that wakes up cannot start or stop ranks.
- **Reports** (ranks started, rank exited, checkpoint, health check result) wait in an outbox
  until the scheduler acknowledges them, and are sent again in order after a reconnect.
- **Maintenance steps** (``RunMaintenance``) run in the background (:mod:`agents.maintenance`),
  once per command id like every command; a resent copy is acknowledged as a duplicate and
  its result comes (or came) as a report that waits in the outbox until acknowledged.
- **Deep health checks** (``RunHealthCheck``) run in the background through an injected
  :data:`HealthCheckFn`, one at a time; the result is a report. **Log reads** (``FetchLogs``)
  go through an injected :data:`LogReadFn` and are answered at once with a ``LogChunk``.

Every message up the stream goes through one writer task (gRPC allows one write at a time).
Every message is built and read by :mod:`agents.wire`; this module never touches a generated
message's fields.

Must not import ``scheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from agents import wire
from agents.health.verdict import Health
from agents.launch import LogPiece
from agents.maintenance import run_step
from agents.ranks import RankExecutor, RankExit, RankKey, RankSupervisor
from agents.timing import Backoff, WaitFn, heartbeat_loop, wait_or_stop
from agents.transport import AgentStream, AgentTransport, SchedulerRejectedError, TransportError
from agents.wire import AckStatus, AgentIdentity, HealthCheckOutcome
from firsthop.reasons import ErrorReason
from firsthop.v1 import agent_pb2
from topology.errors import FirsthopError

FATAL_REASONS: Final = frozenset(
    {
        ErrorReason.UNKNOWN_NODE,
        ErrorReason.TOPOLOGY_MISMATCH,
        ErrorReason.GPU_COUNT_MISMATCH,
        ErrorReason.INVALID_INPUT,
        ErrorReason.WRONG_HOST,
        ErrorReason.PERMISSION_DENIED,
        ErrorReason.UNAUTHENTICATED,
    }
)
"""Registration refusals that retrying cannot fix (a certificate for another host, or none
the scheduler accepts, stays so)."""
REREGISTER_REASONS: Final = frozenset({ErrorReason.UNKNOWN_SESSION, ErrorReason.SESSION_REPLACED})
STATUS_WAIT_S: Final = 5.0
"""How long to wait for a finished call's status after a failed write."""
RECONNECT_SHARE_OF_TIMEOUT: Final = 0.2
FENCE_POLL_S: Final = 1.0
"""How often an agent past its fence time (unheard) checks whether ranks started."""
FENCE_SLACK_S: Final = 0.01
"""Looked after the fence time ran out by this much (a timer may fire a clock tick early)."""
"""The longest reconnection delay, as a share of the scheduler's heartbeat timeout."""

HealthProbe = Callable[[], tuple[Health, str]]
"""Returns the host's health verdict and, when not healthy, why."""

HealthCheckFn = Callable[[], Awaitable[HealthCheckOutcome]]
"""Runs the host's deep health check (must not block the event loop)."""
LogReadFn = Callable[[str, int, int, int, int], LogPiece]
"""``read(job_id, attempt, rank, offset, max_bytes)``: part of a rank's log."""

_log = logging.getLogger(__name__)


def always_healthy() -> tuple[Health, str]:
    """A :data:`HealthProbe` for simulated hosts."""
    return Health.HEALTHY, ""


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
        self.epoch = 0
        """The newest leader epoch seen (registration answers and commands)."""
        self.stale_commands = 0
        """Commands refused because they came from an older epoch than :attr:`epoch`."""
        self._steps: set[asyncio.Task[None]] = set()
        self._fence_after_s = 0.0
        self._fence_armed = asyncio.Event()
        """Set while the scheduler gave a fence time (the fence loop sleeps otherwise)."""
        self._last_heard: float | None = None
        self.fenced = 0
        """How many times this agent fenced itself (stopped its ranks, unheard)."""

    # ------------------------------------------------------------------ main loop

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; reconnect after failures.

        Raises:
            FatalAgentError: the scheduler refused the host (unknown host, topology mismatch).
        """
        fence = asyncio.create_task(self._fence_loop(stop), name="agent fence")
        try:
            await self._run(stop)
        finally:
            fence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fence
            if self._check is not None:
                self._check.cancel()

    def _heard(self) -> None:
        self._last_heard = asyncio.get_running_loop().time()

    async def _fence_loop(self, stop: asyncio.Event) -> None:
        """Fencing: with ranks running and no word from any scheduler for the fence time the
        scheduler gave at registration, stop them all at once (SIGKILL). The scheduler
        replaces a silent host's ranks only after its heartbeat timeout, which is longer, so
        two attempts of a job never run at once; an outage shorter than the fence time (a
        failover) leaves the ranks alone."""
        fenced_at: float | None = None
        while True:
            fence = self._fence_after_s
            if not fence:
                armed = asyncio.ensure_future(self._fence_armed.wait())
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait({armed, halt}, return_when=asyncio.FIRST_COMPLETED)
                for waiter in (armed, halt):
                    waiter.cancel()
                await asyncio.gather(armed, halt, return_exceptions=True)
                if stop.is_set():
                    return
                continue
            if await self._opts.wait(stop, self._fence_check_in(fence, fenced_at)):
                return
            heard = self._last_heard
            if not fence or heard is None or fenced_at == heard:
                continue
            silent = asyncio.get_running_loop().time() - heard
            running = self.supervisor.running()
            if silent <= fence or not running:
                continue
            fenced_at = heard
            self.fenced += 1
            _log.warning(
                "%s: fenced: no word from any scheduler for %.1f s; stopping %d job attempt(s)",
                self.identity.host,
                silent,
                len(running),
            )
            for job_id, attempt in running:
                self.supervisor.stop(job_id, attempt, [], 0.0)

    def _fence_check_in(self, fence: float, fenced_at: float | None) -> float:
        """Seconds until the fence loop looks again: just after the fence time since the last
        word runs out, but at least every quarter of the fence time (so a shorter fence time
        from a later registration applies soon); once it ran out (unheard, or ranks already
        fenced), every :data:`FENCE_POLL_S` (at most a quarter of the fence time).

        Agents hear from the scheduler every heartbeat interval, so a connected agent looks
        about once per quarter fence time, not once a second: thousands of simulated agents
        in one process spent a quarter of their CPU on these checks."""
        poll = min(FENCE_POLL_S, fence / 4)
        heard = self._last_heard
        if heard is None or fenced_at == heard:
            return poll
        left = heard + fence - asyncio.get_running_loop().time()
        if left <= 0:
            return poll
        return min(left, fence / 4) + FENCE_SLACK_S

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self._session_id is None:
                    await self._register()
                await self._serve(stop)
            except SchedulerRejectedError as exc:
                if exc.reason in FATAL_REASONS:
                    fatal = FatalAgentError(
                        f"{self.identity.host}: {exc.message}", reason=exc.reason
                    )
                    fatal.status_code = exc.status_code
                    raise fatal from None
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
        response = await self._transport.register(wire.register_request(self.identity))
        registered = wire.registered_from_proto(response)
        self._session_id = registered.session_id
        self.epoch = max(self.epoch, registered.epoch)
        self._fence_after_s = registered.fence_after_s
        if self._fence_after_s > 0:
            self._fence_armed.set()
        else:
            self._fence_armed.clear()
        self._heard()
        self._fresh_session = True
        self._backoff.reset()  # the scheduler answered
        if registered.heartbeat_interval_s is not None:
            self._interval_s = registered.heartbeat_interval_s
        if registered.heartbeat_timeout_s is not None:
            self._max_delay_s = registered.heartbeat_timeout_s * RECONNECT_SHARE_OF_TIMEOUT

    async def _serve(self, stop: asyncio.Event) -> None:
        stream = self._transport.connect()
        queue: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        hello = wire.hello_to_proto(
            self.identity.host, self._session_id or "", self.supervisor.running()
        )
        queue.put_nowait(hello)
        for report in self._outbox.values():
            queue.put_nowait(wire.report_message(report))
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
            self._heard()
            self._fresh_session = False
            item = wire.scheduler_message_from_proto(message)
            if isinstance(item, wire.HeartbeatAck):
                continue
            if isinstance(item, wire.ReportAck):
                self._outbox.pop(item.report_id, None)
            elif item is not None:
                self._send(self.apply(item, epoch=wire.command_epoch(message)))

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
        self._send(
            wire.heartbeat_to_proto(
                self._heartbeat_seq, health, detail, self.supervisor.running(), _now()
            )
        )

    # ------------------------------------------------------------------ commands

    def handle_command(self, command: agent_pb2.Command) -> agent_pb2.CommandAck:
        """Apply a wire command at most once per id; the acknowledgement to send back."""
        return self.apply(wire.command_from_proto(command), epoch=wire.command_epoch(command)).ack

    def apply(self, command: wire.AgentCommand, *, epoch: int = 0) -> agent_pb2.AgentMessage:
        """Apply a command at most once per id; the acknowledgement to send back.

        A command of an older ``epoch`` than the newest seen is refused unapplied (fencing).
        """
        cid = command.command_id
        if epoch < self.epoch:
            self.stale_commands += 1
            _log.warning(
                "%s: ignoring command %s of epoch %d (the leader's epoch is %d)",
                self.identity.host,
                cid,
                epoch,
                self.epoch,
            )
            return wire.ack_to_proto(
                cid, AckStatus.REJECTED, f"stale epoch {epoch}; the leader's is {self.epoch}"
            )
        self.epoch = epoch
        if cid in self._applied:
            return wire.ack_to_proto(cid, AckStatus.DUPLICATE, "")
        status, message = AckStatus.APPLIED, ""
        match command:
            case wire.StartCommand():
                status, message = self._start(command)
            case wire.StopCommand(job_id=job_id, attempt=attempt, ranks=ranks):
                count = self.supervisor.stop(
                    job_id, attempt, list(ranks), command.grace_s, command.signal
                )
                message = f"stopping {count} ranks"
            case wire.SignalCommand(job_id=job_id, attempt=attempt, ranks=ranks):
                count = self.supervisor.signal(job_id, attempt, list(ranks), command.signal)
                message = f"signalled {count} ranks"
            case wire.HealthCheckCommand():
                status, message = self._start_check(command.check_id)
            case wire.MaintenanceCommand():
                task = asyncio.create_task(self._run_maintenance(command), name=cid)
                self._steps.add(task)
                task.add_done_callback(self._steps.discard)
                message = f"maintenance {command.step} started"
            case wire.FetchLogsCommand():
                self._send(wire.log_chunk_to_proto(command.request_id, self._read_log(command)))
                message = "log read"
            case wire.UnknownCommand():
                status, message = AckStatus.REJECTED, f"unknown command {command.kind!r}"
        self._remember(cid)
        return wire.ack_to_proto(cid, status, message)

    def _start(self, start: wire.StartCommand) -> tuple[AckStatus, str]:
        bad = [r.gpu for r in start.ranks if r.gpu >= self.identity.gpus]
        if bad:
            return AckStatus.REJECTED, f"no GPUs {bad} on {self.identity.host}"
        launches = wire.launches_of(start)
        started = self.supervisor.start(launches)
        if not started and launches:
            return AckStatus.DUPLICATE, "ranks already started"
        return AckStatus.APPLIED, f"started {len(started)} ranks"

    def _start_check(self, check_id: str) -> tuple[AckStatus, str]:
        run = self._opts.health_check
        if run is None:
            return AckStatus.REJECTED, "this agent runs no deep health checks"
        if self._check is not None and not self._check.done():
            return AckStatus.REJECTED, "a deep health check is already running"
        self._check = asyncio.create_task(self._run_check(check_id, run), name="deep check")
        return AckStatus.APPLIED, "deep health check started"

    async def _run_check(self, check_id: str, run: HealthCheckFn) -> None:
        try:
            outcome = await run()
        except Exception as exc:  # a broken check is a failed check, not a dead agent
            _log.warning("%s: deep health check failed to run", self.identity.host, exc_info=True)
            outcome = HealthCheckOutcome(False, f"the check could not run: {exc}")
        self._report(wire.health_check_report(check_id, outcome, _now()))

    async def _run_maintenance(self, command: wire.MaintenanceCommand) -> None:
        try:
            outcome = await run_step(
                command,
                self.identity.host,
                probe=self._opts.health,
                deep=self._opts.health_check,
            )
        except Exception as exc:  # a broken step is a failed step, not a dead agent
            _log.warning("%s: maintenance step failed to run", self.identity.host, exc_info=True)
            outcome = wire.MaintenanceOutcome(False, f"the step could not run: {exc}")
        self._report(wire.maintenance_report(command, outcome, _now()))

    def _read_log(self, fetch: wire.FetchLogsCommand) -> LogPiece:
        if self._opts.logs is None:
            return LogPiece(found=False, error=f"{self.identity.host} keeps no rank logs")
        return self._opts.logs(
            fetch.job_id, fetch.attempt, fetch.rank, fetch.offset, fetch.max_bytes
        )

    def _remember(self, command_id: str) -> None:
        self._applied[command_id] = None
        while len(self._applied) > self._opts.remembered_commands:
            self._applied.popitem(last=False)

    # ------------------------------------------------------------------ reports

    def _report(self, report: agent_pb2.Report) -> None:
        self._report_seq += 1
        report_id = f"{self.identity.agent_instance}-{self._report_seq}"
        self._outbox[report_id] = wire.identified(report, report_id)
        self._send(wire.report_message(report))

    def _ranks_started(self, job_id: str, attempt: int, ranks: Sequence[int]) -> None:
        self._report(wire.ranks_started_report(job_id, attempt, ranks, _now()))

    def _rank_exited(self, key: RankKey, result: RankExit) -> None:
        self._report(wire.rank_exited_report(key, result, _now()))

    def _checkpointed(self, key: RankKey, step: int, path: str) -> None:
        self._report(wire.checkpoint_report(key, step, path, _now()))

    @property
    def unacknowledged_reports(self) -> int:
        """Reports the scheduler has not acknowledged yet."""
        return len(self._outbox)


def _now() -> datetime:
    return datetime.now(UTC)
