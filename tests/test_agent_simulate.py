"""The simulated cluster (:mod:`agents.simulate`) without a network: shards of the hosts, and
waiting for thousands of agents to connect at a cost linear in their number."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agents.cli import app
from agents.ranks import SimulatedExecutor
from agents.simulate import SimulatedCluster, identities, shard_range
from agents.transport import SchedulerRejectedError
from firsthop.v1 import agent_pb2
from topology.errors import ExitCode
from topology.generators import fat_tree
from topology.model import Topology
from topology.spec import dump_spec


def test_shards_cover_every_host_once_in_even_contiguous_blocks() -> None:
    for total, count in ((8192, 4), (10, 3), (2, 5), (0, 2)):
        blocks = [shard_range(total, i, count) for i in range(count)]
        assert [p for block in blocks for p in block] == list(range(total))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_shard_outside_its_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="want 0 <= I < N"):
        shard_range(10, index, count)


def test_sharded_identities_split_the_first_hosts_of_the_topology() -> None:
    topology = Topology.from_spec(fat_tree(2, 2, 4, gpus_per_host=8))
    every = [a.host for a in identities(topology, 12)]
    shards = [[a.host for a in identities(topology, 12, (i, 3))] for i in range(3)]
    assert [h for shard in shards for h in shard] == every
    assert [len(s) for s in shards] == [4, 4, 4]


class _Stream:
    """A ``Connect`` stream that takes every message and never answers."""

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        pass

    async def read(self) -> agent_pb2.SchedulerMessage | None:
        await asyncio.get_running_loop().create_future()  # until the session closes it
        return None

    def close(self) -> None:
        pass


class _OneAfterAnother:
    """Registers the agents one at a time, in host order, one turn of the event loop after the
    previous one, so they connect over many turns, as thousands do against a real scheduler;
    refuses the hosts in ``unknown``."""

    def __init__(self, hosts: list[str], unknown: frozenset[str] = frozenset()) -> None:
        self._turns = {host: asyncio.Event() for host in hosts}
        self._previous = dict(zip(hosts[1:], hosts, strict=False))
        self._unknown = unknown

    async def register(
        self, request: agent_pb2.RegisterNodeRequest
    ) -> agent_pb2.RegisterNodeResponse:
        previous = self._previous.get(request.host)
        if previous is not None:
            await self._turns[previous].wait()
        await asyncio.sleep(0)  # one turn of the event loop per registration
        self._turns[request.host].set()
        if request.host in self._unknown:
            raise SchedulerRejectedError("no such host", reason="unknown_node")
        return agent_pb2.RegisterNodeResponse(
            session_id=f"s-{request.host}", heartbeat_interval_ms=60_000
        )

    def connect(self) -> _Stream:
        return _Stream()

    async def close(self) -> None:
        pass


def _counting_event_waits(counts: Counter[str]) -> Any:
    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]
    ) -> asyncio.Task[Any]:
        counts[getattr(coro, "__qualname__", "")] += 1
        return asyncio.Task(coro, loop=loop)

    return factory


async def _connect_all(agents: int, unknown: frozenset[str] = frozenset()) -> Counter[str]:
    topology = Topology.from_spec(fat_tree(2, 4, agents // 8, gpus_per_host=8))
    idents = identities(topology)
    hosts = [a.host for a in idents]
    transport = _OneAfterAnother(hosts, unknown)  # one for every channel: one order
    cluster = SimulatedCluster(
        "127.0.0.1:1", idents, SimulatedExecutor(), transport=lambda _addresses: transport
    )
    counts: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    loop.set_task_factory(_counting_event_waits(counts))
    stop = asyncio.Event()
    runner = asyncio.create_task(cluster.run(stop))
    try:
        await asyncio.wait_for(cluster.wait_connected(), 60)
        assert cluster.connected == agents - len(unknown)
        assert set(cluster.failed) == unknown
    finally:
        loop.set_task_factory(None)
        stop.set()
        await asyncio.wait_for(runner, 60)
    return counts


async def test_waiting_for_agents_that_connect_one_by_one_costs_a_few_waits_per_agent() -> None:
    agents = 512
    counts = await _connect_all(agents)
    # Each session waits on a few events of its own (stop, fence); waiting for them all must
    # add about one wait per agent. It used to add one per agent still unconnected every
    # time one connected (tens of thousands here), which at 8,192 agents kept the
    # event loop too busy to send heartbeats.
    assert counts["Event.wait"] < 8 * agents, counts.most_common(5)


async def test_waiting_for_agents_counts_those_that_gave_up() -> None:
    await _connect_all(64, unknown=frozenset({"h0003", "h0040"}))


@pytest.mark.parametrize("shard", ["2/2", "a/b", "1", "-1/3"])
def test_simulate_refuses_a_shard_that_is_not_one_of_its_count(shard: str, tmp_path: Path) -> None:
    topology = tmp_path / "cluster.yaml"
    dump_spec(fat_tree(1, 1, 2, gpus_per_host=8), topology)
    result = CliRunner().invoke(
        app,
        ["simulate", "--server", "127.0.0.1:1", "--topology", str(topology), "--shard", shard],
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "want I/N with 0 <= I < N" in result.output
