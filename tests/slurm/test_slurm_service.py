"""``--server`` mode: the scheduler's SlurmService and the hooks' client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import grpc.aio
import pytest
from slurm_builders import lab

from agents.slurm.comment import JobShape
from agents.slurm.ctld import allocation_table
from agents.slurm.errors import OutageError
from agents.slurm.remote import ServerPublisher, table_to_proto
from agents.slurm.state import SliceError
from scheduler.api.errors import ErrorInterceptor
from scheduler.api.slurm_serde import (
    node_slice_from_proto,
    node_slice_to_proto,
    rank_table_from_proto,
    rank_table_to_proto,
)
from scheduler.api.slurm_servicer import add_slurm_service
from scheduler.runtime.slurm_tables import (
    NodeRanks,
    RankTableNotFoundError,
    SlurmRankTable,
    SlurmTables,
)
from topology.errors import InvalidInputError


def _table(job: str = "11") -> SlurmRankTable:
    return SlurmRankTable(
        slurm_job_id=job,
        world_size=8,
        gpus_per_node=4,
        master_addr="n3",
        master_port=20011,
        nodes=(NodeRanks("n3", 0, (0, 1, 2, 3)), NodeRanks("n1", 1, (4, 5, 6, 7))),
        cost_ms=10.0,
        slurm_order_cost_ms=12.5,
    )


def test_serde_round_trips() -> None:
    table = _table()
    assert rank_table_from_proto(rank_table_to_proto(table)) == table
    part = table.nodes[1]
    assert node_slice_from_proto(node_slice_to_proto(part)) == part


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"slurm_job_id": ""}, "no job id"),
        ({"master_port": 0}, "no master address or port"),
        ({"world_size": 9}, "ranks are not 0..8"),
        ({"nodes": (NodeRanks("n3", 0, (0, 1, 2, 3)), NodeRanks("n3", 1, (4, 5, 6, 7)))}, "twice"),
        ({"nodes": (NodeRanks("n3", 0, (0, 1, 2, 4)), NodeRanks("n1", 1, (3, 5, 6, 7)))}, "block"),
    ],
)
def test_incomplete_tables_are_refused(change: dict[str, object], problem: str) -> None:
    tables = SlurmTables()
    with pytest.raises(InvalidInputError, match=problem) as info:
        tables.publish(replace(_table(), **change))  # type: ignore[arg-type]
    assert info.value.reason == "invalid_rank_table"
    assert len(tables) == 0


def test_registry_replaces_finds_and_evicts_the_oldest() -> None:
    tables = SlurmTables(max_tables=2)
    assert not tables.publish(_table("1"))
    assert tables.publish(_table("1"))
    tables.publish(_table("2"))
    tables.publish(_table("3"))
    with pytest.raises(RankTableNotFoundError):
        tables.get("1")
    table, part = tables.node_slice("3", "n1")
    assert (table.slurm_job_id, part.ranks) == ("3", (4, 5, 6, 7))
    with pytest.raises(RankTableNotFoundError) as info:
        tables.node_slice("3", "n9")
    assert info.value.reason == "node_not_in_table"
    assert tables.delete("3")
    assert not tables.delete("3")


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, SlurmTables]]:
    server = grpc.aio.server(interceptors=(ErrorInterceptor(),))
    tables = add_slurm_service(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", tables
    finally:
        await server.stop(None)


async def test_hooks_publish_fetch_and_remove_through_the_service(
    service: tuple[str, SlurmTables],
) -> None:
    address, tables = service
    client = ServerPublisher(address)
    computed = allocation_table(lab(), "21", ["n1", "n2", "n3", "n4"], JobShape({"tp": 4, "pp": 2}))
    where = await asyncio.to_thread(client.publish, computed.table)
    assert where == f"firsthop://{address}"
    stored = tables.get("21")
    assert stored.cost_ms == pytest.approx(computed.cost_ms)
    for node, piece in computed.table.slices.items():
        assert await asyncio.to_thread(client.fetch_slice, "21", node) == piece.to_text()
    assert await asyncio.to_thread(client.fetch_slice, "22", "n1") is None
    with pytest.raises(SliceError, match="not in job 21"):
        await asyncio.to_thread(client.fetch_slice, "21", "n6")
    assert await asyncio.to_thread(client.remove, "21")
    assert not await asyncio.to_thread(client.remove, "21")


async def test_a_table_the_server_refuses_is_an_outage(service: tuple[str, SlurmTables]) -> None:
    address, _ = service
    computed = allocation_table(lab(), "23", ["n1", "n3"], JobShape({"tp": 4, "dp": 2}))
    broken = replace(computed.table, job_id="")
    with pytest.raises(OutageError, match="INVALID_ARGUMENT invalid_rank_table") as info:
        await asyncio.to_thread(ServerPublisher(address).publish, broken)
    assert info.value.reason == "server_error"
    assert table_to_proto(computed.table).nodes[0].node_rank == 0


def test_an_unreachable_server_is_an_outage() -> None:
    from bench.harness.slurm import free_port

    client = ServerPublisher(f"127.0.0.1:{free_port()}", timeout_s=2.0)
    with pytest.raises(OutageError) as info:
        client.fetch_slice("1", "n1")
    assert info.value.reason == "server_unavailable"
