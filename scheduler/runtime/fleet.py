"""The agents' side of the runtime: registration, streams, reports, acknowledgements.

What the AgentService servicer hands over (already translated to events) becomes core events
here, with the bookkeeping the core leaves to the runtime:

- **Registration** checks the agent's topology location against the topology (a mismatch is
  ``topology_mismatch``), applies ``NodeRegistered`` durably, then opens a session.
- **Stops.** The core emits ``StopRanks`` and expects ``RanksStopped`` once the host's ranks
  of that attempt are gone. Rank exits reported after a stop count towards it (they are not
  ``RankExited`` failures); the stop completes when every rank the host was started with has
  exited, at once when they had all exited before the stop (a job whose surviving ranks died
  with their peers), or when a heartbeat after the acknowledged stop no longer lists the
  attempt (an agent that restarted and never had the ranks). ``RanksStopped.clean`` says
  that every rank the host was started with reported exit status 0 after the stop (a job
  that checkpointed on its signal and exited).
- **Acknowledgements.** A start acknowledged (applied or duplicate) is ``StartAcknowledged``;
  a start the agent rejected is reported to the core as the exit of that host's first rank
  with status 127, so the job goes through the failure path.
- **Questions** to one agent (deep health checks, log reads) are :attr:`Fleet.requests`
  (:mod:`scheduler.runtime.requests`); a rejected one fails its waiting caller.
- **Reports** are applied at most once per report id (agents resend unacknowledged reports
  after a reconnect) and acknowledged once durable. A report the core refuses (an unknown or
  finished job) is acknowledged too: retrying it could never succeed.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Final

from firsthop.reasons import ErrorReason
from scheduler.core.actions import Action, RunMaintenance, StartRanks, StopRanks
from scheduler.core.events import (
    Event,
    HeartbeatReceived,
    MaintenanceReported,
    NodeRegistered,
    RankExited,
    RanksStopped,
    StartAcknowledged,
)
from scheduler.core.records import Node
from scheduler.runtime.agents import AgentLink, FetchLogs, RunHealthCheck
from scheduler.runtime.requests import AgentRequests
from scheduler.runtime.runtime import EventFactory, Runtime
from topology.errors import FirsthopError
from topology.model import Topology

REMEMBERED_REPORTS: Final = 4096
"""Report ids remembered per host to recognise resent copies."""
REMEMBERED_EXITS: Final = 4096
"""Host attempts whose ranks all exited, remembered so a later stop of them is done at once."""
START_REJECTED_EXIT: Final = 127

_log = logging.getLogger(__name__)


class TopologyMismatchError(FirsthopError):
    """An agent's GPUs or location disagree with the scheduler's topology."""

    status_code = "FAILED_PRECONDITION"
    default_reason = ErrorReason.TOPOLOGY_MISMATCH


class AckStatus(Enum):
    """What an agent said about a command."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(slots=True)
class _Stop:
    remaining: set[int] | None
    """Ranks still to exit; ``None`` when the host's ranks are not known (after a restart)."""
    acked: bool = False
    clean: bool = True
    """Every rank exit reported since the stop had status 0."""


AttemptKey = tuple[str, str, int]
"""(host, job id, attempt)."""


class Fleet:
    """Agent-facing operations of the runtime (see the module docstring)."""

    def __init__(self, runtime: Runtime, topology: Topology) -> None:
        self._runtime = runtime
        self._topology = topology
        self._locations = {name: topology.location(name) for name in topology.hosts}
        self._ranks: dict[AttemptKey, frozenset[int]] = {}
        self._stops: dict[str, dict[tuple[str, int], _Stop]] = {}
        """Stops in progress by host, then (job id, attempt)."""
        self._reports: dict[str, OrderedDict[str, None]] = {}
        self._exited: OrderedDict[AttemptKey, None] = OrderedDict()
        """Host attempts all of whose ranks reported their exit (newest last, bounded)."""
        self.requests = AgentRequests(runtime)
        """Deep health checks and log reads waiting for their agent's answer."""
        runtime.on_actions.append(self._observe)

    # ------------------------------------------------------------------ sessions

    async def register(
        self, make: Callable[[datetime], NodeRegistered], location: tuple[str, ...]
    ) -> tuple[Node, str]:
        """Check and apply a registration; the node and its new session id.

        Raises:
            TopologyMismatchError: the location disagrees with the topology.
            FirsthopError: what the core refuses (``unknown_node``, ``gpu_count_mismatch``).
        """

        def checked(at: datetime) -> Event:
            event = make(at)
            expected = self._locations.get(event.node)
            if location and expected is not None and tuple(location) != expected:
                raise TopologyMismatchError(
                    f"{event.node}: agent says it is under {'/'.join(location)}; "
                    f"the topology has {'/'.join(expected) or 'the cluster root'}"
                )
            return event

        node = await self._runtime.apply(checked, self._node_of)
        if node is None:  # pragma: no cover - apply returns the result
            raise FirsthopError("registration produced no node")
        session = self._runtime.agents.register(node.name)
        return node, session

    def _node_of(self, event: Event) -> Node:
        if not isinstance(event, NodeRegistered):  # pragma: no cover - only used for those
            raise TypeError(f"not a registration: {event!r}")
        return self._runtime.state.nodes[event.node]

    def attach(self, node: str, session_id: str) -> AgentLink:
        """Bind a stream to a session (``unknown_session`` if stale)."""
        return self._runtime.agents.attach(node, session_id)

    def detach(self, link: AgentLink) -> None:
        """Unbind a stream that ended."""
        self._runtime.agents.detach(link)

    # ------------------------------------------------------------------ heartbeats

    async def hello(self, link: AgentLink, running: Mapping[str, int]) -> None:
        """The first message of a stream: a heartbeat listing every running attempt.

        It carries no health verdict, so the node keeps the one it has.
        """
        node = link.node

        def beat(at: datetime) -> Event:
            health = self._runtime.state.nodes[node].health
            return HeartbeatReceived(at=at, node=node, health=health, running=running)

        await self._apply_quietly(beat)
        self._stops_gone(node, running)

    def heartbeat(self, link: AgentLink, make: EventFactory, running: Mapping[str, int]) -> None:
        """A heartbeat (not waited for: heartbeats change nothing durable)."""
        self._runtime.post(make)
        self._stops_gone(link.node, running)

    def _stops_gone(self, node: str, running: Mapping[str, int]) -> None:
        stops = self._stops.get(node)
        if not stops:
            return
        for (job_id, attempt), stop in list(stops.items()):
            if stop.acked and running.get(job_id) != attempt:
                self._finish_stop((node, job_id, attempt))

    # ------------------------------------------------------------------ reports

    async def report(self, link: AgentLink, report_id: str, make: EventFactory) -> None:
        """Apply a report at most once, then acknowledge it on its stream."""
        if self._seen(link.node, report_id):
            self._runtime.agents.report_acked(link, report_id)
            return
        await self._apply_quietly(make)
        self._remember(link.node, report_id)
        self._runtime.agents.report_acked(link, report_id)

    def health_check_reported(
        self,
        link: AgentLink,
        report_id: str,
        check_id: str,
        *,
        passed: bool,
        summary: str,
        report_json: str,
    ) -> None:
        """A deep health check's result: wake whoever waits for it, acknowledge the report."""
        if not self._seen(link.node, report_id):
            self.requests.health_check_result(check_id, passed, summary, report_json)
            self._remember(link.node, report_id)
        self._runtime.agents.report_acked(link, report_id)

    async def rank_exited(
        self, link: AgentLink, report_id: str, make: Callable[[datetime], RankExited]
    ) -> None:
        """A rank's exit: part of a stop in progress, or a ``RankExited`` for the core."""
        if self._seen(link.node, report_id):
            self._runtime.agents.report_acked(link, report_id)
            return
        # Read which rank it is; the core gets the event stamped when it is applied.
        event = make(self._runtime.now())
        key = (link.node, event.job_id, event.attempt)
        stop = self._stops.get(link.node, {}).get((event.job_id, event.attempt))
        if stop is not None:
            stop.clean = stop.clean and event.exit_code == 0
            if stop.remaining is not None:
                stop.remaining.discard(event.rank)
                if not stop.remaining:
                    self._finish_stop(key, clean=stop.clean)
        else:
            await self._apply_quietly(make)
            ranks = self._ranks.get(key)
            if ranks is not None:
                left = ranks - {event.rank}
                if left:
                    self._ranks[key] = left
                else:
                    del self._ranks[key]
                    self._exited[key] = None
                    while len(self._exited) > REMEMBERED_EXITS:
                        self._exited.popitem(last=False)
        self._remember(link.node, report_id)
        self._runtime.agents.report_acked(link, report_id)

    async def acknowledged(
        self, link: AgentLink, command_id: str, status: AckStatus, message: str = ""
    ) -> None:
        """An agent acknowledged a command."""
        command = self._runtime.agents.acknowledged(link.node, command_id)
        if command is None:
            return
        if isinstance(command, RunHealthCheck | FetchLogs):
            if status is AckStatus.REJECTED:
                self.requests.rejected(command, message)
            return
        if isinstance(command, RunMaintenance):
            if status is AckStatus.REJECTED:
                step = command

                def refused(at: datetime) -> Event:
                    return MaintenanceReported(
                        at=at,
                        campaign=step.campaign,
                        node=step.node,
                        attempt=step.attempt,
                        step=step.step,
                        ok=False,
                        detail=f"rejected by the agent: {message}",
                    )

                await self._apply_quietly(refused)
            return
        if isinstance(command, StopRanks):
            stop = self._stops.get(command.node, {}).get((command.job_id, command.attempt))
            if stop is not None:
                stop.acked = True
            return
        if status is AckStatus.REJECTED:
            first = command.ranks[0].rank if command.ranks else 0

            def exited(at: datetime) -> Event:
                return RankExited(
                    at=at,
                    job_id=command.job_id,
                    node=command.node,
                    attempt=command.attempt,
                    rank=first,
                    exit_code=START_REJECTED_EXIT,
                )

            await self._apply_quietly(exited)
            return

        def acked(at: datetime) -> Event:
            return StartAcknowledged(
                at=at,
                job_id=command.job_id,
                node=command.node,
                attempt=command.attempt,
            )

        await self._apply_quietly(acked)

    # ------------------------------------------------------------------ plumbing

    def _observe(self, action: Action) -> None:
        if isinstance(action, StartRanks):
            key = (action.node, action.job_id, action.attempt)
            self._ranks[key] = frozenset(slot.rank for slot in action.ranks)
        elif isinstance(action, StopRanks):
            key = (action.node, action.job_id, action.attempt)
            if key in self._exited:  # nothing of that attempt runs there any more
                del self._exited[key]
                self._finish_stop(key)
                return
            stops = self._stops.setdefault(action.node, {})
            if (action.job_id, action.attempt) not in stops:
                ranks = self._ranks.get(key)
                stops[(action.job_id, action.attempt)] = _Stop(
                    set(ranks) if ranks is not None else None
                )

    def _finish_stop(self, key: AttemptKey, *, clean: bool = False) -> None:
        node, job_id, attempt = key
        stops = self._stops.get(node)
        if stops is not None:
            stops.pop((job_id, attempt), None)
            if not stops:
                del self._stops[node]
        self._ranks.pop(key, None)
        self._runtime.post(
            lambda at: RanksStopped(at=at, job_id=job_id, node=node, attempt=attempt, clean=clean)
        )

    async def _apply_quietly(self, make: EventFactory) -> None:
        try:
            await self._runtime.apply(make)
        except FirsthopError as exc:
            if exc.reason in (ErrorReason.STORE_UNAVAILABLE, ErrorReason.SHUTTING_DOWN):
                raise
            _log.debug("agent event refused: %s: %s", exc.reason, exc)

    def _seen(self, node: str, report_id: str) -> bool:
        return report_id in self._reports.get(node, {})

    def _remember(self, node: str, report_id: str) -> None:
        seen = self._reports.setdefault(node, OrderedDict())
        seen[report_id] = None
        while len(seen) > REMEMBERED_REPORTS:
            seen.popitem(last=False)
