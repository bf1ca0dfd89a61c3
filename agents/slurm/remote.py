"""``--server`` mode: rank tables kept by the firsthop scheduler's ``SlurmService``.

:class:`ServerPublisher` is the hooks' table store when ``firsthop-slurm.json`` names a
server: PrologSlurmctld publishes, the Prolog fetches its node's slice, EpilogSlurmctld
deletes (``proto/firsthop/v1/slurm.proto``). Compute nodes then need no shared directory,
only a route to the scheduler. With TLS (``tls_*`` in the configuration) the hooks present a
certificate with ``OU=slurm`` to the scheduler's agents' port, which admits them to the
SlurmService only. Every call has a deadline; an unreachable or failing server is
an :class:`~agents.slurm.errors.OutageError` (the fail mode decides), a job without a table
is ``None``, a node missing from a table is a
:class:`~agents.slurm.state.SliceError`.

Must not import ``scheduler``: the agent side of the wire translates for itself.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from agents.slurm.errors import OutageError
from agents.slurm.state import HostSlice, JobTable, SliceError, node_order
from agents.tls import AgentTls
from firsthop.v1 import slurm_pb2, slurm_pb2_grpc
from topology.errors import FirsthopError

RPC_TIMEOUT_S = 5.0
REASON_KEY = "firsthop-reason"


def table_to_proto(table: JobTable) -> slurm_pb2.SlurmRankTable:
    """A computed table as the wire's ``SlurmRankTable``."""
    order = node_order(table.slices)
    first = table.slices[order[0]]
    meta = table.meta
    return slurm_pb2.SlurmRankTable(
        slurm_job_id=table.job_id,
        world_size=first.world_size,
        gpus_per_node=first.gpus_per_node,
        master_addr=first.master_addr,
        master_port=first.master_port,
        nodes=[
            slurm_pb2.NodeSlice(
                node=n, node_rank=table.slices[n].node_rank, ranks=table.slices[n].ranks
            )
            for n in order
        ],
        cost_ms=float(meta.get("cost_ms", 0.0)),
        slurm_order_cost_ms=float(meta.get("slurm_order_cost_ms", 0.0)),
    )


def slice_from_proto(message: slurm_pb2.GetNodeSliceResponse) -> HostSlice:
    """The answer to ``GetNodeSlice`` as a node slice."""
    return HostSlice(
        job_id=message.slurm_job_id,
        world_size=message.world_size,
        nnodes=message.nnodes,
        node_rank=message.slice.node_rank,
        gpus_per_node=message.gpus_per_node,
        master_addr=message.master_addr,
        master_port=message.master_port,
        ranks=tuple(message.slice.ranks),
    )


def _reason(error: grpc.RpcError) -> str:
    trailing = error.trailing_metadata() if isinstance(error, grpc.Call) else None
    items: tuple[tuple[str, str | bytes], ...] = tuple(trailing or ())
    for key, value in items:
        if key == REASON_KEY:
            return value if isinstance(value, str) else value.decode()
    return ""


class ServerPublisher:
    """A :class:`~agents.slurm.hooks.TablePublisher` over the scheduler's SlurmService.

    Args:
        address: the scheduler's ``HOST:PORT``.
        timeout_s: deadline of each call.
        channel: opens a channel to ``address`` (tests inject one).
        tls: mutual TLS files; ``None``: a plain channel (ignored when ``channel`` is given).
    """

    def __init__(
        self,
        address: str,
        timeout_s: float = RPC_TIMEOUT_S,
        channel: Callable[[str], grpc.Channel] | None = None,
        *,
        tls: AgentTls | None = None,
    ) -> None:
        self._address = address
        self._timeout = timeout_s
        self._channel = channel or _opener(tls)

    def _call(self, what: str, fn: Callable[[slurm_pb2_grpc.SlurmServiceStub], object]) -> object:
        try:
            with self._channel(self._address) as channel:
                return fn(slurm_pb2_grpc.SlurmServiceStub(channel))
        except FirsthopError as exc:  # unreadable TLS files: an outage of firsthop itself
            raise OutageError(exc.reason, f"{what} on {self._address}: {exc}") from exc
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code is grpc.StatusCode.NOT_FOUND:
                raise _NotFoundError(_reason(exc)) from exc
            name = code.name if code is not None else "UNKNOWN"
            raise OutageError(
                "server_unavailable" if code is grpc.StatusCode.UNAVAILABLE else "server_error",
                f"{what} on {self._address}: {name} {_reason(exc)}".strip(),
            ) from exc

    def publish(self, table: JobTable) -> str:
        """Publish the table; return where."""
        request = slurm_pb2.PublishRankTableRequest(table=table_to_proto(table))
        self._call("PublishRankTable", lambda s: s.PublishRankTable(request, timeout=self._timeout))
        return f"firsthop://{self._address}"

    def fetch_slice(self, job_id: str, node: str) -> str | None:
        """The node's slice text, ``None`` when the job has no table."""
        request = slurm_pb2.GetNodeSliceRequest(slurm_job_id=job_id, node=node)
        try:
            answer = self._call(
                "GetNodeSlice", lambda s: s.GetNodeSlice(request, timeout=self._timeout)
            )
        except _NotFoundError as exc:
            if exc.reason == "node_not_in_table":
                raise SliceError(f"node {node} is not in job {job_id}'s rank table") from exc
            return None
        if not isinstance(answer, slurm_pb2.GetNodeSliceResponse):  # pragma: no cover
            raise OutageError("server_error", "GetNodeSlice returned no slice")
        return slice_from_proto(answer).to_text()

    def remove(self, job_id: str) -> bool:
        """Delete the job's table; whether there was one."""
        request = slurm_pb2.DeleteRankTableRequest(slurm_job_id=job_id)
        answer = self._call(
            "DeleteRankTable", lambda s: s.DeleteRankTable(request, timeout=self._timeout)
        )
        return bool(getattr(answer, "deleted", False))


def _opener(tls: AgentTls | None) -> Callable[[str], grpc.Channel]:
    if tls is None:
        return grpc.insecure_channel

    def secure(address: str) -> grpc.Channel:
        return grpc.secure_channel(address, tls.credentials())  # files read at each call

    return secure


class _NotFoundError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
