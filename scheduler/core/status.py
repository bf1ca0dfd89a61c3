"""Cluster status for operators: capacity, usage, fragmentation per tier, queue depths.

Pure functions over a :class:`~scheduler.core.state.SchedulerState`. "Free" means free GPUs on
hosts in service (READY and not unhealthy); GPUs of drained, lost or unregistered hosts count
as capacity but not as free. The largest placeable job per tier and the number of jobs of
common sizes that fit are count-based (whole free hosts for jobs of a host or more, free GPUs
of one host below that), as in :mod:`placement.fragmentation`: they ignore per-job hints such
as required tiers.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from placement.fragmentation import fragmentation
from scheduler.core.capacity import common_gpus_per_host
from scheduler.core.records import Job
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState

COMMON_SIZES = (8, 64, 512)
STRANDED_LEAF_HOSTS = 4


@dataclass(frozen=True, slots=True)
class TierStatus:
    """Fragmentation of one tier (host, leaf, pod, ..., cluster).

    Attributes:
        name: tier name.
        domains: domains of the tier.
        whole_free: domains whose hosts are all in service and entirely free.
        partly_free: domains with some free GPUs but not whole-free.
        full: domains with no free GPU.
        largest_job: the most GPUs one job could get inside a single domain of the tier.
    """

    name: str
    domains: int
    whole_free: int
    partly_free: int
    full: int
    largest_job: int


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Depth and usage of one queue."""

    name: str
    priority: int
    gpu_quota: int | None
    weight: float
    pending_jobs: int
    pending_gpus: int
    running_jobs: int
    held_gpus: int


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The cluster at ``at`` (see the module docstring)."""

    at: datetime
    hosts: int
    gpus: int
    schedulable_gpus: int
    allocated_gpus: int
    fenced_gpus: int
    free_gpus: int
    stranded_gpus: int
    stranded_hosts: int
    nodes_by_state: dict[str, int]
    nodes_by_health: dict[str, int]
    jobs_by_state: dict[str, int]
    queues: tuple[QueueStatus, ...]
    tiers: tuple[TierStatus, ...]
    fits: dict[int, int]
    """Jobs of each common size (8, 64, 512 GPUs) that fit at once in the free capacity."""

    @property
    def utilisation(self) -> float:
        """Allocated share of the GPUs in service (0 when none is)."""
        in_service = self.schedulable_gpus
        return self.allocated_gpus / in_service if in_service else 0.0

    @property
    def largest_job(self) -> dict[str, int]:
        """Per tier name, the largest job placeable now within one domain of it."""
        return {t.name: t.largest_job for t in self.tiers}


def cluster_status(state: SchedulerState, at: datetime) -> ClusterStatus:
    """The status of the cluster held in ``state``."""
    index = state.index
    usable = state.usable_hosts()
    free_per_host = index.free_gpus_per_host(state.busy) * usable
    g = common_gpus_per_host(index)
    frag = fragmentation(index, free_per_host, usable, g, STRANDED_LEAF_HOSTS)
    allocated = sum(state.jobs[j].gpus for j in state.allocated)
    fenced = sum(len(f.gpus) for f in state.fences.values())
    whole = usable & (free_per_host == index.host_gpus)
    tiers: list[TierStatus] = []
    for level, name in enumerate(index.level_names):
        hosts = index.hosts_per_domain(level)
        free = index.sum_per_domain(level, free_per_host)
        whole_hosts = index.sum_per_domain(level, whole.astype(np.int64))
        whole_free = int(np.count_nonzero(whole_hosts == hosts))
        full = int(np.count_nonzero(free == 0))
        tiers.append(
            TierStatus(
                name=name,
                domains=len(hosts),
                whole_free=whole_free,
                partly_free=len(hosts) - whole_free - full,
                full=full,
                largest_job=int(frag.largest_job.get(name, 0)),
            )
        )
    whole_g = int(np.count_nonzero(whole & (index.host_gpus == g)))
    fits = {size: _fits(size, g, whole_g, free_per_host) for size in COMMON_SIZES}
    return ClusterStatus(
        at=at,
        hosts=index.num_hosts,
        gpus=index.num_gpus,
        schedulable_gpus=int(index.host_gpus[usable].sum()),
        allocated_gpus=allocated,
        fenced_gpus=fenced,
        free_gpus=int(free_per_host.sum()),
        stranded_gpus=frag.stranded_gpus,
        stranded_hosts=frag.stranded_hosts,
        nodes_by_state=dict(sorted(Counter(n.state.value for n in state.nodes.values()).items())),
        nodes_by_health=dict(sorted(Counter(n.health.value for n in state.nodes.values()).items())),
        jobs_by_state=dict(sorted(Counter(j.state.value for j in state.jobs.values()).items())),
        queues=tuple(_queue_status(state, name) for name in sorted(state.queues)),
        tiers=tuple(tiers),
        fits=fits,
    )


def _fits(size: int, g: int, whole_hosts: int, free_per_host: np.ndarray) -> int:
    if size < g:
        return int((free_per_host // size).sum())
    hosts_per_job = -(-size // g)
    return whole_hosts // hosts_per_job


def _queue_status(state: SchedulerState, name: str) -> QueueStatus:
    queue = state.queues[name]
    queued = [state.jobs[k[2]] for k in state.pending.get(name, ())]
    running = [state.jobs[j] for j in state.allocated if state.jobs[j].queue == name]
    return QueueStatus(
        name=name,
        priority=queue.priority,
        gpu_quota=queue.gpu_quota,
        weight=queue.weight,
        pending_jobs=len(queued),
        pending_gpus=sum(j.gpus for j in queued),
        running_jobs=len(running),
        held_gpus=state.queue_usage.get(name, 0),
    )


def ettr(job: Job, now: datetime) -> float | None:
    """Effective training time ratio: productive time over wall time since first start.

    ``None`` before the job first ran. Productive time is run time saved by checkpoints (or
    by a successful end); wall time runs from the first start to the end (or ``now``).
    """
    if job.first_started_at is None:
        return None
    end = job.finished_at or now
    wall = (end - job.first_started_at).total_seconds()
    if wall <= 0:
        return 1.0 if job.state is JobState.SUCCEEDED else 0.0
    return min(1.0, job.productive_s / wall)


def queue_depth(state: SchedulerState) -> int:
    """Queued jobs in all queues."""
    return sum(len(keys) for keys in state.pending.values())
