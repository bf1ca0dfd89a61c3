"""Rank tables of Slurm jobs, held by the scheduler for the Slurm plug-in's ``--server`` mode.

PrologSlurmctld publishes a job's table, each node's Prolog fetches its slice, and
EpilogSlurmctld deletes it. :class:`SlurmTables` checks that a table is whole (every rank
``0..world-1`` exactly once, each node one aligned block of consecutive ranks, no node twice)
before it keeps it, and bounds how many it keeps (the oldest go first), so a controller that
never runs its EpilogSlurmctld cannot grow the scheduler without end.

Soft state, kept in memory and not in the store: a table matters only between a job's
allocation and the start of its tasks (seconds), and a requeued job gets a new table from
its next PrologSlurmctld. A scheduler restart in that window makes the job's Prologs find no
table, and the plug-in's fail mode decides (open: the job runs in Slurm's order).

Must not import ``scheduler.api``, ``scheduler.cli``, grpc or the generated protos.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from topology.errors import FirsthopError, InvalidInputError

DEFAULT_MAX_TABLES = 10_000


class RankTableNotFoundError(FirsthopError):
    """No table for the job, or the node is not in it.

    Stable reasons: ``rank_table_not_found``, ``node_not_in_table``.
    """

    status_code = "NOT_FOUND"
    default_reason = "rank_table_not_found"


@dataclass(frozen=True, slots=True)
class NodeRanks:
    """One node's part of a table."""

    node: str
    node_rank: int
    ranks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SlurmRankTable:
    """A Slurm job's rank table (see ``proto/firsthop/v1/slurm.proto``)."""

    slurm_job_id: str
    world_size: int
    gpus_per_node: int
    master_addr: str
    master_port: int
    nodes: tuple[NodeRanks, ...]
    cost_ms: float = 0.0
    slurm_order_cost_ms: float = 0.0

    def check(self) -> None:
        """Raise ``InvalidInputError`` (reason ``invalid_rank_table``) unless the table is whole."""
        problem = self._problem()
        if problem is not None:
            raise InvalidInputError(
                f"rank table of Slurm job {self.slurm_job_id!r}: {problem}",
                reason="invalid_rank_table",
            )

    def _problem(self) -> str | None:
        if not self.slurm_job_id:
            return "no job id"
        if not self.nodes or self.world_size < 1 or self.gpus_per_node < 1:
            return "no nodes, ranks or GPUs"
        if not 0 < self.master_port < 65536 or not self.master_addr:
            return "no master address or port"
        names = [n.node for n in self.nodes]
        if len(set(names)) != len(names) or not all(names):
            return "a node is empty or listed twice"
        ranks = sorted(r for n in self.nodes for r in n.ranks)
        if ranks != list(range(self.world_size)):
            return f"ranks are not 0..{self.world_size - 1}, each once"
        for position, node in enumerate(self.nodes):
            if node.node_rank != position:
                return f"node {node.node} has node rank {node.node_rank} at position {position}"
            first = position * self.gpus_per_node
            if len(self.nodes) > 1 and node.ranks != tuple(
                range(first, first + self.gpus_per_node)
            ):
                return f"node {node.node} does not hold one aligned block of ranks"
        return None


class SlurmTables:
    """The tables of running Slurm jobs, by Slurm job id (oldest evicted past ``max_tables``)."""

    def __init__(self, max_tables: int = DEFAULT_MAX_TABLES) -> None:
        self._tables: OrderedDict[str, SlurmRankTable] = OrderedDict()
        self._max = max_tables

    def __len__(self) -> int:
        return len(self._tables)

    def publish(self, table: SlurmRankTable) -> bool:
        """Keep ``table`` (checked); whether it replaced an earlier table of the job.

        Raises:
            InvalidInputError: reason ``invalid_rank_table``.
        """
        table.check()
        replaced = self._tables.pop(table.slurm_job_id, None) is not None
        self._tables[table.slurm_job_id] = table
        while len(self._tables) > self._max:
            self._tables.popitem(last=False)
        return replaced

    def get(self, slurm_job_id: str) -> SlurmRankTable:
        """The job's table.

        Raises:
            RankTableNotFoundError: reason ``rank_table_not_found``.
        """
        table = self._tables.get(slurm_job_id)
        if table is None:
            raise RankTableNotFoundError(f"no rank table for Slurm job {slurm_job_id!r}")
        return table

    def node_slice(self, slurm_job_id: str, node: str) -> tuple[SlurmRankTable, NodeRanks]:
        """The job's table and one node's part of it.

        Raises:
            RankTableNotFoundError: ``rank_table_not_found`` or ``node_not_in_table``.
        """
        table = self.get(slurm_job_id)
        for part in table.nodes:
            if part.node == node:
                return table, part
        raise RankTableNotFoundError(
            f"node {node!r} is not in Slurm job {slurm_job_id!r}'s rank table",
            reason="node_not_in_table",
        )

    def delete(self, slurm_job_id: str) -> bool:
        """Forget the job's table; whether there was one."""
        return self._tables.pop(slurm_job_id, None) is not None
