"""What every handler works with: the state, the config, and the outbox of agent commands.

Also the small helpers shared by job and node handlers: building start commands, stopping a
job's ranks (with fences), and completing drains once a node holds no job.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from firsthop.reasons import StopReason
from scheduler.core.actions import (
    RunMaintenance,
    StartRanks,
    StopRanks,
    start_command_id,
    stop_command_id,
)
from scheduler.core.config import SchedulerConfig
from scheduler.core.records import Job, RankSlot
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState, NodeState
from scheduler.jobspec import Launch

MASTER_PORT_BASE = 20000
MASTER_PORT_SPAN = 10000
UNBOUNDED_GRACE_S = 366 * 24 * 3600.0
"""The grace of a checkpoint request that must never end in SIGKILL (a maintenance move
without ``--force``): ranks that do not answer are left running; the core decides."""


@dataclass
class Outbox:
    """Agent commands produced while handling one event."""

    stops: list[StopRanks] = field(default_factory=list)
    starts: list[StartRanks] = field(default_factory=list)
    maintenance: list[RunMaintenance] = field(default_factory=list)


@dataclass
class Ctx:
    """State, configuration and outbox of one ``handle`` call."""

    state: SchedulerState
    config: SchedulerConfig
    out: Outbox

    def checkpoint_grace_s(self, job: Job) -> float:
        """Seconds ``job``'s ranks get between its checkpoint signal and SIGKILL on a planned
        stop: the spec's ``checkpoint.grace_s`` (else ``stop_grace_s``), at most the
        operator's ``max_checkpoint_grace_s``."""
        ckpt = job.spec.checkpoint
        wanted = self.config.stop_grace_s
        if ckpt is not None and ckpt.grace_s is not None:
            wanted = float(ckpt.grace_s)
        return min(wanted, self.config.max_checkpoint_grace_s)

    def stop(
        self,
        job: Job,
        node: str,
        reason: StopReason,
        *,
        force: bool = False,
        graceful: bool = False,
    ) -> None:
        """Ask ``node``'s agent to stop ``job``'s ranks of its current attempt.

        ``graceful`` (a planned stop of a job that checkpoints): the job's checkpoint signal
        and grace instead of SIGTERM and ``stop_grace_s``; a graceful stop of a job stopping
        with no stop deadline (a move that must not stop it without a checkpoint) gets
        :data:`UNBOUNDED_GRACE_S`; ``force``: SIGKILL at once.
        """
        ckpt = job.spec.checkpoint
        signal, grace = "SIGTERM", self.config.stop_grace_s
        if graceful and ckpt is not None:
            signal, grace = ckpt.signal, self.checkpoint_grace_s(job)
            if job.stop_deadline is None and job.checkpoint_requested_at is not None:
                grace = UNBOUNDED_GRACE_S
        self.out.stops.append(
            StopRanks(
                command_id=stop_command_id(job.id, job.restarts, node, force=force),
                job_id=job.id,
                node=node,
                attempt=job.restarts,
                grace_s=0.0 if force else grace,
                reason=reason,
                signal=signal,
            )
        )

    def stop_and_fence(
        self,
        held: Job,
        at: datetime,
        reason: StopReason,
        skip: Iterable[str] = (),
        *,
        graceful: bool = False,
    ) -> None:
        """Stop the ranks of ``held`` (the record as it held its allocation) on every host
        but ``skip``, fencing their GPUs until the agents confirm; then settle drains.

        Call right after the job let go of its allocation. A job that was stopping with no
        stop deadline (a move waiting for its checkpoint, never escalated) is killed at once:
        the stop command it already has would never end in SIGKILL, and the agent runs one
        stop per command id.
        """
        if held.allocation is None:
            return
        waiting = (
            held.state is JobState.PREEMPTED
            and held.stop_deadline is None
            and held.checkpoint_requested_at is not None
        )
        skipped = set(skip)
        grace = self.checkpoint_grace_s(held) if graceful else self.config.stop_grace_s
        deadline = at + timedelta(seconds=2 * max(grace, self.config.stop_grace_s))
        for node in held.allocation.hosts:
            if node in skipped:
                continue
            self.stop(held, node, reason, graceful=graceful, force=waiting)
            self.state.add_fence(held, node, deadline)
        self.settle_drains(held.allocation.hosts)

    def settle_drains(self, nodes: Iterable[str]) -> None:
        """Move DRAINING nodes that hold no job any more to DRAINED."""
        state = self.state
        for name in nodes:
            node = state.nodes.get(name)
            if (
                node is not None
                and node.state is NodeState.DRAINING
                and not state.host_jobs.get(name)
            ):
                state.move_node(node, NodeState.DRAINED, node.reason)

    def start_all(self, job: Job) -> None:
        """Queue start commands for every host of ``job``'s allocation."""
        self.start_hosts(job, job.allocation.hosts if job.allocation else ())

    def start_hosts(self, job: Job, nodes: Iterable[str]) -> None:
        """Queue start commands for ``job`` on ``nodes`` (hosts of its allocation)."""
        alloc = job.allocation
        if alloc is None:
            return
        wanted = set(nodes)
        by_host: dict[str, list[RankSlot]] = {}
        for slot in sorted(alloc.ranks, key=lambda s: s.rank):
            by_host.setdefault(slot.host, []).append(slot)
        hosts = list(by_host)
        master_node = self.state.nodes.get(hosts[0])
        master = (master_node.address if master_node else "") or hosts[0]
        port = master_port(job.id, job.restarts)
        spec = job.spec
        env = MappingProxyType(dict(spec.env))
        for node_rank, host in enumerate(hosts):
            if host not in wanted:
                continue
            self.out.starts.append(
                StartRanks(
                    command_id=start_command_id(job.id, job.restarts, host),
                    job_id=job.id,
                    node=host,
                    attempt=job.restarts,
                    job_name=spec.name,
                    user=job.user,
                    ranks=tuple(by_host[host]),
                    node_rank=node_rank,
                    num_nodes=len(hosts),
                    world_size=job.gpus,
                    master_addr=master,
                    master_port=port,
                    command=spec.command,
                    env=env,
                    checkpoint_dir=spec.checkpoint.dir if spec.checkpoint else None,
                    time_limit_s=spec.time_limit_s,
                    per_host=spec.launch is Launch.PER_HOST,
                    checkpoint_signal=spec.checkpoint.signal if spec.checkpoint else None,
                    checkpoint_grace_s=self.checkpoint_grace_s(job) if spec.checkpoint else None,
                )
            )


def master_port(job_id: str, attempt: int) -> int:
    """Rendezvous port of an attempt: stable, spread over a range to avoid collisions."""
    return MASTER_PORT_BASE + zlib.crc32(f"{job_id}:{attempt}".encode()) % MASTER_PORT_SPAN
