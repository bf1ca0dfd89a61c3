"""Serde of the Slurm plug-in's messages: :mod:`scheduler.runtime.slurm_tables` <-> protos.

Paired ``*_to_proto`` / ``*_from_proto`` functions, round-trip tested. Must not import
``scheduler.core`` internals, ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

from firsthop.v1 import slurm_pb2
from scheduler.runtime.slurm_tables import NodeRanks, SlurmRankTable


def node_slice_to_proto(part: NodeRanks) -> slurm_pb2.NodeSlice:
    """A node's ranks as a ``NodeSlice``."""
    return slurm_pb2.NodeSlice(node=part.node, node_rank=part.node_rank, ranks=part.ranks)


def node_slice_from_proto(message: slurm_pb2.NodeSlice) -> NodeRanks:
    """A ``NodeSlice`` as a node's ranks."""
    return NodeRanks(message.node, message.node_rank, tuple(message.ranks))


def rank_table_to_proto(table: SlurmRankTable) -> slurm_pb2.SlurmRankTable:
    """A rank table as a ``SlurmRankTable`` message."""
    return slurm_pb2.SlurmRankTable(
        slurm_job_id=table.slurm_job_id,
        world_size=table.world_size,
        gpus_per_node=table.gpus_per_node,
        master_addr=table.master_addr,
        master_port=table.master_port,
        nodes=[node_slice_to_proto(n) for n in table.nodes],
        cost_ms=table.cost_ms,
        slurm_order_cost_ms=table.slurm_order_cost_ms,
    )


def rank_table_from_proto(message: slurm_pb2.SlurmRankTable) -> SlurmRankTable:
    """A ``SlurmRankTable`` message as a rank table (not yet checked)."""
    return SlurmRankTable(
        slurm_job_id=message.slurm_job_id,
        world_size=message.world_size,
        gpus_per_node=message.gpus_per_node,
        master_addr=message.master_addr,
        master_port=message.master_port,
        nodes=tuple(node_slice_from_proto(n) for n in message.nodes),
        cost_ms=message.cost_ms,
        slurm_order_cost_ms=message.slurm_order_cost_ms,
    )


def node_slice_response(table: SlurmRankTable, part: NodeRanks) -> slurm_pb2.GetNodeSliceResponse:
    """The answer to ``GetNodeSlice``."""
    return slurm_pb2.GetNodeSliceResponse(
        slurm_job_id=table.slurm_job_id,
        world_size=table.world_size,
        nnodes=len(table.nodes),
        gpus_per_node=table.gpus_per_node,
        master_addr=table.master_addr,
        master_port=table.master_port,
        slice=node_slice_to_proto(part),
    )
