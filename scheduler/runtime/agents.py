"""Agent sessions, their streams, and the commands each agent has not acknowledged yet.

- ``register`` gives a host a new session id (an agent that registers again replaces its
  previous session, whose stream is told to close).
- ``attach`` binds a ``Connect`` stream to a session; ``detach`` unbinds it.
- ``send`` queues a command for a host (start or stop ranks, run a deep health check, read a
  log): it is kept until the agent acknowledges it, written at once if the host's stream is
  open, and written again on every later stream of that host until acknowledged. A stop
  drops the unacknowledged start of the same job attempt on that host (the agent would only
  start ranks to stop them).

Sessions are not persisted: after a scheduler restart agents get ``unknown_session`` and
register again, and the core (``SchedulerStarted``) re-issues the commands that matter.

Must not import grpc, generated protos, ``scheduler.api`` or ``scheduler.store``; the stream
servicer translates what it takes from a link's outbox.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from firsthop.reasons import ErrorReason
from scheduler.core.actions import RunMaintenance, StartRanks, StopRanks
from topology.errors import FirsthopError

MAX_PENDING_PER_NODE: Final = 1024
"""Unacknowledged commands kept per host; the oldest are dropped beyond this."""


class UnknownSessionError(FirsthopError):
    """A ``Connect`` for a session the scheduler does not know (register again)."""

    status_code = "FAILED_PRECONDITION"
    default_reason = ErrorReason.UNKNOWN_SESSION


class SessionReplacedError(FirsthopError):
    """The host registered again; this older session's stream ends."""

    status_code = "FAILED_PRECONDITION"
    default_reason = ErrorReason.SESSION_REPLACED


class ShuttingDownError(FirsthopError):
    """The server is stopping and takes no new requests or streams."""

    status_code = "UNAVAILABLE"
    default_reason = ErrorReason.SHUTTING_DOWN


@dataclass(frozen=True, slots=True)
class RunHealthCheck:
    """Ask ``node``'s agent to run its deep health check."""

    command_id: str
    node: str
    check_id: str


@dataclass(frozen=True, slots=True)
class FetchLogs:
    """Ask ``node``'s agent for part of one rank's log."""

    command_id: str
    node: str
    request_id: str
    job_id: str
    attempt: int
    rank: int
    offset: int
    max_bytes: int


Command = StartRanks | StopRanks | RunHealthCheck | FetchLogs | RunMaintenance
"""What the hub keeps and resends until the agent acknowledges it."""


@dataclass(frozen=True, slots=True)
class ReportAcked:
    """Tell the agent a report is durable."""

    report_id: str


@dataclass(frozen=True, slots=True)
class HeartbeatAcked:
    """Tell the agent its heartbeat arrived (it counts its fence time from these)."""


Outgoing = Command | ReportAcked | HeartbeatAcked


@dataclass(eq=False, slots=True)
class AgentLink:
    """One open ``Connect`` stream of a host."""

    node: str
    session_id: str
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    replaced: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a newer session of the host took over (or the server stops); the stream
    must end."""


class AgentHub:
    """Sessions, open streams and unacknowledged commands, by host."""

    def __init__(self) -> None:
        self._sessions: dict[str, str] = {}
        self._links: dict[str, AgentLink] = {}
        self._pending: dict[str, OrderedDict[str, Command]] = {}
        self.closing = False
        """Set by :meth:`close_all`: streams end because the server is stopping."""
        self.epoch = 0
        """The leader's fencing epoch, stamped on every command and registration (0: no
        leader lease, as with SQLite); agents ignore commands of an older epoch."""

    # ------------------------------------------------------------------ sessions

    def register(self, node: str) -> str:
        """Start a new session for ``node``; a stream of its previous session is closed."""
        session_id = uuid.uuid4().hex
        self._sessions[node] = session_id
        old = self._links.pop(node, None)
        if old is not None:
            old.replaced.set()
        return session_id

    def attach(self, node: str, session_id: str) -> AgentLink:
        """Bind a new stream; unacknowledged commands of the host are queued on it first.

        Raises:
            UnknownSessionError: ``session_id`` is not the host's current session.
        """
        if not session_id or self._sessions.get(node) != session_id:
            raise UnknownSessionError(f"{node}: unknown session; register again")
        if self.closing:
            raise ShuttingDownError("the scheduler is shutting down")
        old = self._links.get(node)
        if old is not None:
            old.replaced.set()
        link = AgentLink(node, session_id)
        self._links[node] = link
        for command in self._pending.get(node, {}).values():
            link.outbox.put_nowait(command)
        return link

    def detach(self, link: AgentLink) -> None:
        """Unbind a stream that ended (a newer one of the host stays bound)."""
        if self._links.get(link.node) is link:
            del self._links[link.node]

    def close_all(self) -> None:
        """End every stream (server shutdown); agents reconnect to the next server."""
        self.closing = True
        for link in self._links.values():
            link.replaced.set()

    def link(self, node: str) -> AgentLink | None:
        """The open stream of ``node``, if any."""
        return self._links.get(node)

    @property
    def connected(self) -> int:
        """Hosts with an open stream."""
        return len(self._links)

    # ------------------------------------------------------------------ commands

    def send(self, command: Command) -> None:
        """Keep ``command`` until acknowledged, and write it now if the host is connected."""
        pending = self._pending.setdefault(command.node, OrderedDict())
        link = self._links.get(command.node)
        if isinstance(command, StopRanks):
            for cid, old in list(pending.items()):
                if (
                    isinstance(old, StartRanks)
                    and old.job_id == command.job_id
                    and old.attempt == command.attempt
                ):
                    del pending[cid]
        pending[command.command_id] = command
        pending.move_to_end(command.command_id)
        while len(pending) > MAX_PENDING_PER_NODE:
            pending.popitem(last=False)
        if link is not None:
            link.outbox.put_nowait(command)

    def acknowledged(self, node: str, command_id: str) -> Command | None:
        """Forget an acknowledged command; the command, or ``None`` if it was not pending."""
        pending = self._pending.get(node)
        if pending is None:
            return None
        command = pending.pop(command_id, None)
        if not pending:
            del self._pending[node]
        return command

    def pending(self, node: str) -> list[Command]:
        """Unacknowledged commands of ``node``, oldest first."""
        return list(self._pending.get(node, {}).values())

    def report_acked(self, link: AgentLink, report_id: str) -> None:
        """Queue the acknowledgement of a durable report on the stream it came from."""
        link.outbox.put_nowait(ReportAcked(report_id))
