"""A simulated cluster in one process: one :class:`~agents.session.AgentSession` per host.

Each simulated agent registers its host (GPUs and location from the topology file), keeps a
``Connect`` stream, heartbeats every interval the scheduler asks for (jittered), and runs the
ranks it is told to start, as simulated work (:class:`~agents.ranks.SimulatedExecutor`) or as
real local processes (:class:`~agents.launch.ProcessExecutor`). It speaks exactly the
AgentService contract a real agent uses; only the executor, the health probe and the deep
health check (which always passes) are fakes.

Agents share a few gRPC channels (HTTP/2 connections), :data:`AGENTS_PER_CHANNEL` each.

Must not import ``scheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Final

import grpc.aio

from agents.ranks import RankExecutor
from agents.session import AgentSession, FatalAgentError, SessionOptions
from agents.transport import FailoverAgentTransport, parse_addresses
from agents.wire import AgentIdentity, HealthCheckOutcome
from topology.model import Topology

AGENTS_PER_CHANNEL: Final = 256
AGENT_VERSION: Final = "firsthop-sim/0.1"

CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnection backoff (1 s growing to 120 s by default) would keep a restarted
    # scheduler unreachable long after it is back; the session paces its retries itself.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # Each simulated channel is its own connection, not shared with other channels.
    ("grpc.use_local_subchannel_pool", 1),
)

_log = logging.getLogger(__name__)


def identities(topology: Topology, hosts: int | None = None) -> list[AgentIdentity]:
    """Identities of the first ``hosts`` hosts of the topology (all when ``None``)."""
    names = list(topology.hosts)[: hosts if hosts is not None else None]
    instance = f"sim{os.getpid()}"
    return [
        AgentIdentity(
            host=name,
            gpus=topology.hosts[name].gpus,
            location=topology.location(name),
            agent_version=AGENT_VERSION,
            agent_instance=f"{instance}-{name}",
        )
        for name in names
    ]


async def simulated_deep_check() -> HealthCheckOutcome:
    """A simulated host's deep health check: it always passes."""
    return HealthCheckOutcome(True, "simulated host: no hardware to check")


class SimulatedCluster:
    """Many simulated agents against one scheduler address."""

    def __init__(
        self,
        server: str,
        agents: Sequence[AgentIdentity],
        executor: RankExecutor,
        *,
        seed: int = 0,
        options: Callable[[random.Random], SessionOptions] | None = None,
    ) -> None:
        self.server = server
        self._identities = list(agents)
        self._executor = executor
        self._seed = seed
        self._options = options or (lambda rng: SessionOptions(rng=rng))
        self.sessions: list[AgentSession] = []
        self.failed: dict[str, str] = {}
        """Hosts whose agent gave up, with the reason."""
        self._created = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run every agent until ``stop`` is set."""
        # ``server`` may list several schedulers: each group of agents follows the leader.
        addresses = parse_addresses(self.server)
        transports = [
            FailoverAgentTransport(
                addresses,
                lambda address: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS),
            )
            for _ in range(max(1, -(-len(self._identities) // AGENTS_PER_CHANNEL)))
        ]
        try:
            self.sessions = [
                AgentSession(
                    ident,
                    transports[i // AGENTS_PER_CHANNEL],
                    self._executor,
                    self._session_options(i),
                )
                for i, ident in enumerate(self._identities)
            ]
            self._created.set()
            await asyncio.gather(*(self._run_one(s, stop) for s in self.sessions))
        finally:
            for session in self.sessions:
                for task in session.supervisor.cancel_all():
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for transport in transports:
                await transport.close()

    def _session_options(self, i: int) -> SessionOptions:
        options = self._options(random.Random(self._seed * 1_000_003 + i))
        if options.health_check is None:
            options.health_check = simulated_deep_check
        return options

    async def _run_one(self, session: AgentSession, stop: asyncio.Event) -> None:
        try:
            await session.run(stop)
        except FatalAgentError as exc:
            self.failed[session.identity.host] = f"{exc.reason}: {exc.message}"
            _log.error("agent %s gave up: %s", session.identity.host, exc)

    @property
    def connected(self) -> int:
        """Agents with an open stream now."""
        return sum(1 for s in self.sessions if s.connected.is_set())

    async def wait_connected(self, count: int | None = None) -> None:
        """Return once ``count`` (default: every) agents are connected (or gave up)."""
        want = len(self._identities) if count is None else count
        await self._created.wait()
        while self.connected < want:
            if self.failed and len(self.failed) + self.connected >= want:
                return
            waiters = [
                asyncio.ensure_future(s.connected.wait())
                for s in self.sessions
                if not s.connected.is_set()
            ]
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
