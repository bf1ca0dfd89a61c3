"""A simulated cluster in one process: one :class:`~agents.session.AgentSession` per host.

Each simulated agent registers its host (GPUs and location from the topology file), keeps a
``Connect`` stream, heartbeats every interval the scheduler asks for (jittered), and runs the
ranks it is told to start, as simulated work (:class:`~agents.ranks.SimulatedExecutor`) or as
real local processes (:class:`~agents.launch.ProcessExecutor`). It speaks exactly the
AgentService contract a real agent uses; only the executor, the health probe and the deep
health check (which always passes) are fakes.

Agents share a few gRPC channels (HTTP/2 connections), :data:`AGENTS_PER_CHANNEL` each. One
process drives a few thousand agents at most before its own CPU makes their heartbeats late
(the scheduler would rightly take them for lost): larger clusters are spread over several
processes, each simulating one shard of the hosts (:func:`shard_range`).

Must not import ``scheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import grpc.aio

from agents.ranks import RankExecutor
from agents.session import AgentSession, FatalAgentError, SessionOptions
from agents.transport import AgentTransport, FailoverAgentTransport, parse_addresses
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


def shard_range(total: int, index: int, count: int) -> range:
    """The positions, among ``total`` hosts, that shard ``index`` of ``count`` simulates: one
    contiguous block, the blocks as even as can be (sizes differ by at most one).

    Raises:
        ValueError: ``index`` is not in ``[0, count)``.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: want 0 <= I < N")
    return range(total * index // count, total * (index + 1) // count)


def identities(
    topology: Topology, hosts: int | None = None, shard: tuple[int, int] = (0, 1)
) -> list[AgentIdentity]:
    """Identities of the first ``hosts`` hosts of the topology (all when ``None``); with
    ``shard=(I, N)`` only shard ``I`` of ``N`` of them (:func:`shard_range`), so that several
    processes can share the simulated hosts."""
    names = list(topology.hosts)[: hosts if hosts is not None else None]
    positions = shard_range(len(names), *shard)
    names = names[positions.start : positions.stop]
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


class ClusterTransport(AgentTransport, Protocol):
    """What the agents of one channel share: an :class:`~agents.transport.AgentTransport`
    the cluster closes when it stops."""

    async def close(self) -> None:
        """Close the connections."""
        ...


def _grpc_transport(addresses: list[str]) -> ClusterTransport:
    """One HTTP/2 connection per scheduler address, following the leader."""
    return FailoverAgentTransport(
        addresses, lambda address: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    )


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
        first_index: int = 0,
        transport: Callable[[list[str]], ClusterTransport] | None = None,
    ) -> None:
        self.server = server
        self._identities = list(agents)
        self._executor = executor
        self._seed = seed
        self._first_index = first_index
        """Position of the first agent among all simulated hosts (shards of one cluster
        seed their agents' jitter apart)."""
        self._transport = transport or _grpc_transport
        self._options = options or (lambda rng: SessionOptions(rng=rng))
        self.sessions: list[AgentSession] = []
        self.failed: dict[str, str] = {}
        """Hosts whose agent gave up, with the reason."""
        self._created = asyncio.Event()
        self._runs: list[asyncio.Future[object]] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Run every agent until ``stop`` is set."""
        # ``server`` may list several schedulers: each group of agents follows the leader.
        addresses = parse_addresses(self.server)
        transports = [
            self._transport(addresses)
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
            self._runs = [asyncio.ensure_future(self._run_one(s, stop)) for s in self.sessions]
            self._created.set()
            await asyncio.gather(*self._runs)
        finally:
            for run in self._runs:
                run.cancel()
            await asyncio.gather(*self._runs, return_exceptions=True)
            for session in self.sessions:
                for task in session.supervisor.cancel_all():
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for transport in transports:
                await transport.close()

    def _session_options(self, i: int) -> SessionOptions:
        options = self._options(random.Random(self._seed * 1_000_003 + self._first_index + i))
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
        """Return once ``count`` (default: every) agents are connected (or gave up).

        It waits for the sessions one after the other (each until it is connected or its run
        ended), then counts once, so the cost grows with the number of agents, not with its
        square: with thousands of agents in one event loop, waking a waiter per unconnected
        agent on every connection starved the agents' own heartbeats.
        """
        want = len(self._identities) if count is None else count
        await self._created.wait()
        while True:
            for session, run in zip(self.sessions[:want], self._runs[:want], strict=True):
                if not session.connected.is_set() and not run.done():
                    connected: asyncio.Future[object] = asyncio.ensure_future(
                        session.connected.wait()
                    )
                    await asyncio.wait({connected, run}, return_when=asyncio.FIRST_COMPLETED)
                    connected.cancel()
            # Agents whose run ended (they gave up, or were stopped) will never connect.
            if self.connected + sum(1 for run in self._runs if run.done()) >= want:
                return
