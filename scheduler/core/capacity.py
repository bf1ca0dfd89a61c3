"""Free capacity of a cycle: snapshots for the placer and cheap "cannot fit" checks.

The placer is precise but costs milliseconds; most pending jobs of a busy cluster can be
turned away in microseconds by necessary conditions on counts (:meth:`FreeCapacity.could_fit`):

- a job smaller than a host (``gpus < G``, the common GPUs per host) needs one usable host
  with that many free GPUs;
- a larger job needs ``gpus / G`` wholly free usable hosts of ``G`` GPUs (and no more GPUs
  than are free).

These mirror the placer's own first checks (``insufficient_gpus``,
``insufficient_free_hosts``, single-host fit), so a job they turn away would be refused by
the placer too.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

import numpy as np

from placement import Placement, Snapshot
from scheduler.core.records import Job
from scheduler.core.state import SchedulerState
from topology.index import BoolArray, IntArray, TopologyIndex


def common_gpus_per_host(index: TopologyIndex) -> int:
    """The most common GPU count per host (ties: the larger), as the placer uses."""
    counts = np.bincount(index.host_gpus)
    return int(len(counts) - 1 - np.argmax(counts[::-1]))


class FreeCapacity:
    """Counts of free capacity for one busy mask, updated as jobs are admitted.

    Args:
        state: the scheduler state (topology index and unavailable hosts).
        busy: the busy mask these counts describe (not copied; :meth:`take` updates it).
        allowed: hosts the job may use at all (default: every host); the others count as
            unavailable (used to confine a placement to one domain).
    """

    def __init__(
        self, state: SchedulerState, busy: BoolArray, allowed: BoolArray | None = None
    ) -> None:
        index = state.index
        self.index = index
        self.busy = busy
        self.g = common_gpus_per_host(index)
        self.usable = state.usable_hosts()
        if allowed is not None:
            self.usable &= allowed
            self._unavailable = frozenset(np.flatnonzero(~self.usable).tolist())
        else:
            self._unavailable = frozenset(state.unavailable)
        self.free_per_host: IntArray = index.free_gpus_per_host(busy) * self.usable
        self._refresh()

    def _refresh(self) -> None:
        index = self.index
        whole = (self.free_per_host == index.host_gpus) & (index.host_gpus == self.g)
        self.whole_free_hosts = int(np.count_nonzero(whole & self.usable))
        self.max_free_on_host = int(self.free_per_host.max(initial=0))
        self.free_gpus = int(self.free_per_host.sum())

    def snapshot(self) -> Snapshot:
        """A placer snapshot of this capacity."""
        return Snapshot(self.index, self.busy, self._unavailable)

    def could_fit(self, job: Job) -> bool:
        """Necessary condition for ``job`` to be placeable now (see the module docstring)."""
        if job.excluded_hosts:
            return self._could_fit_excluding(job)
        if job.gpus > self.free_gpus:
            return False
        if job.gpus < self.g:
            return job.gpus <= self.max_free_on_host
        return self.whole_free_hosts * self.g >= job.gpus

    def _could_fit_excluding(self, job: Job) -> bool:
        index = self.index
        keep = np.ones(index.num_hosts, dtype=np.bool_)
        for name in job.excluded_hosts:
            host = index.host_ids.get(name)
            if host is not None:
                keep[host] = False
        free = self.free_per_host * keep
        if job.gpus > int(free.sum()):
            return False
        if job.gpus < self.g:
            return job.gpus <= int(free.max(initial=0))
        whole = (free == index.host_gpus) & (index.host_gpus == self.g) & self.usable & keep
        return int(np.count_nonzero(whole)) * self.g >= job.gpus

    def take(self, gpu_ids: IntArray) -> None:
        """Mark GPUs busy (an admission) and update the counts."""
        self.busy[gpu_ids] = True
        hosts = np.searchsorted(self.index.gpu_offset, gpu_ids, side="right") - 1
        np.subtract.at(self.free_per_host, hosts, 1)
        np.maximum(self.free_per_host, 0, out=self.free_per_host)
        self._refresh()


def placement_gpu_ids(index: TopologyIndex, placement: Placement) -> IntArray:
    """Global GPU ids a placement uses."""
    return placement.ranks.global_gpu_ids(index)


def gpu_mask(index: TopologyIndex, gpu_ids: IntArray) -> BoolArray:
    """A mask over global GPU ids with ``gpu_ids`` set."""
    mask = np.zeros(index.num_gpus, dtype=np.bool_)
    mask[gpu_ids] = True
    return mask
