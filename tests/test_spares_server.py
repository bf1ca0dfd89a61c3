"""The server's configuration reaches the core: spare counts per leaf designate spares once the
agents report healthy hosts, and a fence time too short to ride out an outage is announced."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest
from server_builders import WAIT_S, running_agents, running_server, small_topology, stubs

from firsthop.v1 import admin_pb2


async def test_spares_per_leaf_are_kept_by_a_running_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topology = small_topology(1, 2, 3)  # two leaves of three hosts
    index = topology.index
    with caplog.at_level(logging.WARNING, logger="scheduler.server"):
        server_cm = running_server(topology, spares_per_leaf=1)
        server = await server_cm.__aenter__()
    try:
        # fast_config's 0.2 s heartbeats and 10 s timeout leave no room for a 10 s outage.
        assert any("fencing is off" in r.getMessage() for r in caplog.records)
        async with running_agents(server, topology), stubs(server.address) as s:
            async with asyncio.timeout(WAIT_S):
                while True:
                    answer = await s.admin.ListNodes(admin_pb2.ListNodesRequest())
                    spares = [n.name for n in answer.nodes if n.spare]
                    if len(spares) == 2:
                        break
                    await asyncio.sleep(0.05)  # polling a condition, with a deadline
            leaves = Counter(int(index.ancestors[index.host_ids[h], 1]) for h in spares)
            assert leaves == {0: 1, 1: 1}
            # Which host depends on which agents had registered by that tick; the count holds.
            answer = await s.admin.ListNodes(admin_pb2.ListNodesRequest())
            assert sorted(n.name for n in answer.nodes if n.spare) == sorted(spares)
    finally:
        await server_cm.__aexit__(None, None, None)
