"""A compact, immutable index of a topology for hot paths (the placer, cluster status).

Built once per topology generation. Hosts get dense ids ``0..H-1`` in depth-first order, so
every domain at every level covers one contiguous range of host ids; domains get dense ids per
level. Levels: ``0`` is the host, ``1..T`` the switch tiers nearest first, ``T+1`` the cluster.
GPUs get global ids ``gpu_offset[h] + local_index``.

All queries are numpy operations; nothing here walks the networkx graph.

Must not import grpc, generated protos, databases or subprocess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from topology.errors import InvalidInputError, UnknownHostError

if TYPE_CHECKING:
    from topology.model import Topology

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


_A = TypeVar("_A", bound=npt.NDArray[Any])


def _frozen(array: _A) -> _A:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class TopologyIndex:
    """Dense-id view of a topology. Construct with :meth:`build`."""

    level_names: tuple[str, ...]
    bandwidth_gbytes_per_s: FloatArray
    """Effective per-GPU GB/s of traffic whose lowest common level is each level."""
    latency_us: FloatArray
    nvlink_level: int
    """Domains at this level are one NVLink fabric (0: each host)."""
    host_names: tuple[str, ...]
    host_ids: Mapping[str, int]
    host_gpus: IntArray
    gpu_offset: IntArray
    """``gpu_offset[h]`` is the global id of host ``h``'s GPU 0; last entry = total GPUs."""
    ancestors: IntArray
    """``ancestors[h, level]``: id of the domain containing host ``h`` at ``level``."""
    domain_names: tuple[tuple[str, ...], ...]
    domain_start: tuple[IntArray, ...]
    """First host id of each domain, per level."""
    domain_end: tuple[IntArray, ...]
    """One past the last host id of each domain, per level."""
    domain_virtual: tuple[BoolArray, ...]

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, topology: Topology) -> TopologyIndex:
        """Index ``topology`` (hosts in its depth-first order)."""
        top = len(topology.tiers) + 1
        host_names = tuple(topology.hosts)
        num_hosts = len(host_names)
        ancestors = np.zeros((num_hosts, top + 1), dtype=np.int64)
        ancestors[:, 0] = np.arange(num_hosts)
        ids: list[dict[str, int]] = [{} for _ in range(top + 1)]
        ids[top]["cluster"] = 0
        domains = topology.domains
        for h, host in enumerate(topology.hosts.values()):
            name = host.parent
            while name is not None:
                domain = domains[name]
                level_ids = ids[domain.level]
                ancestors[h, domain.level] = level_ids.setdefault(name, len(level_ids))
                name = domain.parent
        ids[0] = {name: h for h, name in enumerate(host_names)}

        starts: list[IntArray] = []
        ends: list[IntArray] = []
        for level in range(top + 1):
            column = ancestors[:, level]
            count = len(ids[level])
            start = np.full(count, num_hosts, dtype=np.int64)
            np.minimum.at(start, column, np.arange(num_hosts))
            size = np.bincount(column, minlength=count).astype(np.int64)
            end = start + size
            if not np.all(np.maximum.reduceat(column, start) == np.arange(count)):
                raise AssertionError("topology hosts are not in depth-first order")
            starts.append(_frozen(start))
            ends.append(_frozen(end))

        host_gpus = np.fromiter((h.gpus for h in topology.hosts.values()), np.int64, num_hosts)
        offset = np.zeros(num_hosts + 1, dtype=np.int64)
        np.cumsum(host_gpus, out=offset[1:])
        virtual = [np.zeros(num_hosts, dtype=np.bool_)]
        for level in range(1, top):
            virtual.append(np.array([domains[n].virtual for n in ids[level]], dtype=np.bool_))
        virtual.append(np.zeros(1, dtype=np.bool_))
        return cls(
            level_names=topology.level_names,
            bandwidth_gbytes_per_s=_frozen(
                np.array(topology.bandwidths_gbytes_per_s, dtype=np.float64)
            ),
            latency_us=_frozen(np.array(topology.latencies_us, dtype=np.float64)),
            nvlink_level=topology.nvlink_level,
            host_names=host_names,
            host_ids=ids[0],
            host_gpus=_frozen(host_gpus),
            gpu_offset=_frozen(offset),
            ancestors=_frozen(ancestors),
            domain_names=tuple(tuple(level_ids) for level_ids in ids),
            domain_start=tuple(starts),
            domain_end=tuple(ends),
            domain_virtual=tuple(_frozen(v) for v in virtual),
        )

    # ------------------------------------------------------------------ sizes

    @property
    def num_levels(self) -> int:
        """Levels including host (0) and cluster (last)."""
        return len(self.level_names)

    @property
    def cluster_level(self) -> int:
        """The root level."""
        return len(self.level_names) - 1

    @property
    def num_hosts(self) -> int:
        """Hosts in the cluster."""
        return len(self.host_names)

    @property
    def num_gpus(self) -> int:
        """GPUs in the cluster."""
        return int(self.gpu_offset[-1])

    def num_domains(self, level: int) -> int:
        """Domains at ``level``."""
        return len(self.domain_names[level])

    def level(self, name: str) -> int:
        """The level of a tier name (``host``, a switch tier, or ``cluster``)."""
        try:
            return self.level_names.index(name)
        except ValueError:
            raise InvalidInputError(
                f"unknown tier {name!r} (tiers: {', '.join(self.level_names)})",
                reason="unknown_tier",
            ) from None

    # ------------------------------------------------------------------ lookups

    def host_id(self, name: str) -> int:
        """The dense id of a host name."""
        try:
            return self.host_ids[name]
        except KeyError:
            raise UnknownHostError(f"unknown host {name!r}") from None

    def domain_id(self, level: int, name: str) -> int:
        """The dense id of a domain name at ``level``."""
        try:
            return self.domain_names[level].index(name)
        except ValueError:
            raise InvalidInputError(
                f"no {self.level_names[level]} named {name!r}", reason="unknown_domain"
            ) from None

    def ancestors_of(self, host: int) -> IntArray:
        """Domain ids of ``host`` at every level, host first."""
        row: IntArray = self.ancestors[host]
        return row

    def lowest_common_level(self, a: int, b: int) -> int:
        """The lowest level whose domain contains both hosts (0 when ``a == b``)."""
        row = self.ancestors[a] == self.ancestors[b]
        return int(np.argmax(row))

    def lowest_common_levels(self, a: IntArray, b: IntArray) -> IntArray:
        """Vectorised :meth:`lowest_common_level` over pairs of host-id arrays."""
        same = self.ancestors[a] == self.ancestors[b]
        levels: IntArray = np.argmax(same, axis=1).astype(np.int64)
        return levels

    def span_level(self, hosts: IntArray) -> int:
        """The lowest level with one domain containing every host of a group."""
        rows = self.ancestors[hosts]
        same = np.all(rows == rows[0], axis=0)
        return int(np.argmax(same))

    def hosts_under(self, level: int, domain: int) -> IntArray:
        """Host ids in one domain (a contiguous range)."""
        return np.arange(self.domain_start[level][domain], self.domain_end[level][domain])

    def hosts_per_domain(self, level: int) -> IntArray:
        """Number of hosts in each domain of ``level``."""
        return self.domain_end[level] - self.domain_start[level]

    def gpus_per_domain(self, level: int) -> IntArray:
        """Number of GPUs in each domain of ``level``."""
        return self.sum_per_domain(level, self.host_gpus)

    def nvlink_domain_of(self, hosts: IntArray) -> IntArray:
        """The NVLink domain id of each host."""
        domains: IntArray = self.ancestors[hosts, self.nvlink_level]
        return domains

    # ------------------------------------------------------------------ capacity

    def sum_per_domain(self, level: int, per_host: IntArray) -> IntArray:
        """Sum a per-host quantity over every domain of ``level``."""
        if level == 0:
            return np.asarray(per_host, dtype=np.int64)
        cumulative = np.zeros(self.num_hosts + 1, dtype=np.int64)
        np.cumsum(per_host, out=cumulative[1:])
        return cumulative[self.domain_end[level]] - cumulative[self.domain_start[level]]

    def free_gpus_per_host(self, busy: BoolArray) -> IntArray:
        """Free GPUs per host, given a mask of busy GPUs over global GPU ids."""
        if busy.shape != (self.num_gpus,):
            raise InvalidInputError(
                f"busy mask has shape {busy.shape}, expected ({self.num_gpus},)",
                reason="invalid_busy_mask",
            )
        free = np.zeros(self.num_gpus + 1, dtype=np.int64)
        np.cumsum(~busy, out=free[1:])
        return free[self.gpu_offset[1:]] - free[self.gpu_offset[:-1]]

    def free_gpus_per_domain(self, level: int, free_per_host: IntArray) -> IntArray:
        """Free GPUs in each domain of ``level``."""
        return self.sum_per_domain(level, free_per_host)

    def free_hosts_per_domain(self, level: int, free_per_host: IntArray) -> IntArray:
        """Wholly free hosts in each domain of ``level``."""
        whole = (free_per_host == self.host_gpus).astype(np.int64)
        return self.sum_per_domain(level, whole)

    def busy_mask(self, entries: Iterable[str]) -> BoolArray:
        """A busy mask from ``host`` or ``host:gpu`` entries (the ``--busy`` file format)."""
        busy = np.zeros(self.num_gpus, dtype=np.bool_)
        for raw in entries:
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            name, sep, gpu_text = entry.partition(":")
            host = self.host_id(name)
            first = int(self.gpu_offset[host])
            if not sep:
                busy[first : first + int(self.host_gpus[host])] = True
                continue
            if not gpu_text.isdigit() or int(gpu_text) >= self.host_gpus[host]:
                raise InvalidInputError(
                    f"{entry!r}: host {name!r} has GPUs 0..{int(self.host_gpus[host]) - 1}",
                    reason="unknown_gpu",
                )
            busy[first + int(gpu_text)] = True
        return busy
