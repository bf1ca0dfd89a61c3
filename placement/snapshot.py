"""The cluster state a placement is computed against: topology index, busy GPUs, health.

A :class:`Snapshot` is immutable: its busy mask is a private read-only copy, so neither the
caller nor the placer can change it after construction.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from topology.index import BoolArray, IntArray, TopologyIndex


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Topology plus which GPUs are busy and which hosts are out of service.

    Attributes:
        index: the topology index.
        busy: one flag per global GPU id (``index.gpu_offset[h] + local``); copied and made
            read-only at construction.
        unavailable: ids of hosts that are unhealthy, drained or otherwise unschedulable; none
            of their GPUs counts as free.
    """

    index: TopologyIndex
    busy: BoolArray
    unavailable: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        busy = np.array(self.busy, dtype=np.bool_, copy=True)
        if busy.shape != (self.index.num_gpus,):
            # Same message and reason as the index's own check.
            self.index.free_gpus_per_host(busy)
        busy.setflags(write=False)
        object.__setattr__(self, "busy", busy)
        bad = [h for h in self.unavailable if not 0 <= h < self.index.num_hosts]
        if bad:
            raise ValueError(f"unavailable host ids out of range: {sorted(bad)[:5]}")

    @classmethod
    def build(
        cls,
        index: TopologyIndex,
        busy_entries: Iterable[str] = (),
        unavailable_hosts: Iterable[str] = (),
    ) -> Snapshot:
        """A snapshot from ``--busy`` style entries (``host`` or ``host:gpu``) and host names.

        Raises:
            UnknownHostError: an entry or unavailable host names no host of the topology.
            InvalidInputError: ``unknown_gpu`` for a GPU index the host does not have.
        """
        busy = index.busy_mask(busy_entries)
        down = frozenset(index.host_id(name) for name in unavailable_hosts)
        return cls(index, busy, down)

    @classmethod
    def empty(cls, index: TopologyIndex) -> Snapshot:
        """Every GPU free and every host available."""
        return cls(index, np.zeros(index.num_gpus, dtype=np.bool_))

    @cached_property
    def available_hosts(self) -> BoolArray:
        """Per host: in service (not in :attr:`unavailable`)."""
        mask = np.ones(self.index.num_hosts, dtype=np.bool_)
        if self.unavailable:
            mask[np.fromiter(self.unavailable, np.int64)] = False
        mask.setflags(write=False)
        return mask

    @cached_property
    def free_gpus_per_host(self) -> IntArray:
        """Free GPUs on each host; 0 on unavailable hosts."""
        free = self.index.free_gpus_per_host(self.busy) * self.available_hosts
        free.setflags(write=False)
        return free

    @cached_property
    def whole_free_hosts(self) -> BoolArray:
        """Per host: available and every GPU free."""
        whole = np.asarray(self.free_gpus_per_host == self.index.host_gpus, dtype=np.bool_)
        whole.setflags(write=False)
        return whole

    def free_gpu_indices(self, host: int) -> IntArray:
        """Local indices of the free GPUs of ``host`` (empty when unavailable)."""
        if not self.available_hosts[host]:
            return np.zeros(0, dtype=np.int64)
        first = int(self.index.gpu_offset[host])
        gpus = int(self.index.host_gpus[host])
        return np.flatnonzero(~self.busy[first : first + gpus]).astype(np.int64)
