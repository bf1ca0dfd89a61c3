"""``SlurmService``: the Slurm plug-in's rank tables (``firsthopctl slurm install --server``).

Translates only: messages to :class:`~scheduler.runtime.slurm_tables.SlurmTables` calls and
back (:mod:`scheduler.api.slurm_serde`); the tables check themselves, and errors reach the
client through the error interceptor. :func:`add_slurm_service` registers it on a server.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from firsthop.v1 import slurm_pb2, slurm_pb2_grpc
from scheduler.api.slurm_serde import node_slice_response, rank_table_from_proto
from scheduler.runtime.slurm_tables import SlurmTables

Context = grpc.aio.ServicerContext[Any, Any]


class SlurmServicer(slurm_pb2_grpc.SlurmServiceServicer):
    """The SlurmService over one table registry."""

    def __init__(self, tables: SlurmTables) -> None:
        self._tables = tables

    async def PublishRankTable(  # noqa: N802 - gRPC method name
        self, request: slurm_pb2.PublishRankTableRequest, context: Context
    ) -> slurm_pb2.PublishRankTableResponse:
        replaced = self._tables.publish(rank_table_from_proto(request.table))
        return slurm_pb2.PublishRankTableResponse(replaced=replaced)

    async def GetNodeSlice(  # noqa: N802
        self, request: slurm_pb2.GetNodeSliceRequest, context: Context
    ) -> slurm_pb2.GetNodeSliceResponse:
        table, part = self._tables.node_slice(request.slurm_job_id, request.node)
        return node_slice_response(table, part)

    async def DeleteRankTable(  # noqa: N802
        self, request: slurm_pb2.DeleteRankTableRequest, context: Context
    ) -> slurm_pb2.DeleteRankTableResponse:
        return slurm_pb2.DeleteRankTableResponse(deleted=self._tables.delete(request.slurm_job_id))


def add_slurm_service(server: grpc.aio.Server, tables: SlurmTables | None = None) -> SlurmTables:
    """Register a :class:`SlurmServicer` on ``server``; return its table registry."""
    registry = tables if tables is not None else SlurmTables()
    slurm_pb2_grpc.add_SlurmServiceServicer_to_server(SlurmServicer(registry), server)
    return registry
