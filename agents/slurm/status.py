"""``firsthopctl slurm status``: a Slurm cluster seen through its firsthop topology.

Reads ``sinfo`` (per node: state, configured and used GPU GRES) and ``squeue`` (job states),
and computes what ``firsthopctl cluster status`` shows for a firsthop cluster: free GPUs per
switch domain, fragmentation per tier (:func:`placement.fragmentation.fragmentation`: whole
free domains, largest job per tier, stranded GPUs and hosts) and, per tier, how many jobs of
common sizes fit with each job inside one domain of that tier.

Nodes out of service (drained, draining, down, failing, in maintenance, not responding) count
as capacity but not as free. Parsing is separate from querying (:func:`parse_sinfo`,
:func:`status_from_nodes`), so tests feed captured output. Must not import ``scheduler``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.slurm.slurmcmd import CommandRunner, SubprocessRunner
from placement.fragmentation import fragmentation
from topology.model import Topology

COMMON_SIZES = (8, 64, 512)
STRANDED_LEAF_HOSTS = 4
SINFO_FORMAT = "NodeList:|,StateLong:|,Gres:|,GresUsed:"
OUT_OF_SERVICE = ("drain", "down", "fail", "maint", "not_responding", "inval", "future", "power")
_GPU = re.compile(r"gpu(?::[^:(,]+)?:(\d+)")


class SlurmQueryError(RuntimeError):
    """``sinfo``/``squeue`` failed (reason ``slurm_unavailable``)."""

    reason = "slurm_unavailable"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One Slurm node as ``sinfo`` shows it."""

    name: str
    state: str
    gpus: int
    gpus_used: int

    @property
    def in_service(self) -> bool:
        """Whether new jobs can start here."""
        return not any(word in self.state for word in OUT_OF_SERVICE)


def gpu_count(gres: str) -> int:
    """GPUs in a GRES string such as ``gpu:4``, ``gpu:h100:8(S:0-1)`` or ``gpu:2(IDX:0-1)``."""
    return sum(int(m.group(1)) for m in _GPU.finditer(gres))


def parse_sinfo(text: str) -> list[NodeInfo]:
    """Parse ``sinfo -h -N -O NodeList:|,StateLong:|,Gres:|,GresUsed:`` output."""
    nodes: dict[str, NodeInfo] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 4 or not parts[0]:
            continue
        name, state, gres, used = parts[:4]
        nodes[name] = NodeInfo(name, state.lower(), gpu_count(gres), gpu_count(used))
    return list(nodes.values())


def status_from_nodes(
    topology: Topology, nodes: Sequence[NodeInfo], job_states: Mapping[str, int]
) -> dict[str, Any]:
    """The status document (see the module docstring). Nodes unknown to the topology are
    counted under ``unknown_nodes`` and otherwise ignored; topology hosts Slurm does not know
    count as out of service."""
    index = topology.index
    known = {n.name: n for n in nodes if n.name in index.host_ids}
    free = np.zeros(index.num_hosts, dtype=np.int64)
    available = np.zeros(index.num_hosts, dtype=np.bool_)
    used_total = 0
    for name, node in known.items():
        h = index.host_ids[name]
        used_total += node.gpus_used
        if node.in_service:
            available[h] = True
            free[h] = max(min(node.gpus, int(index.host_gpus[h])) - node.gpus_used, 0)
    g = int(np.bincount(index.host_gpus).argmax()) if index.num_hosts else 0
    frag = fragmentation(index, free, available, g, STRANDED_LEAF_HOSTS)
    whole = available & (free == index.host_gpus) & (index.host_gpus == g)
    names = index.level_names
    top = index.cluster_level
    domains: list[dict[str, Any]] = []
    tiers: list[dict[str, Any]] = []
    for level in range(1, top + 1):
        free_d = index.sum_per_domain(level, free)
        whole_d = index.sum_per_domain(level, whole.astype(np.int64))
        hosts_d = index.hosts_per_domain(level)
        gpus_d = index.gpus_per_domain(level)
        for d, name in enumerate(index.domain_names[level]):
            if level < top and not index.domain_virtual[level][d]:
                domains.append(
                    {
                        "domain": name,
                        "tier": names[level],
                        "hosts": int(hosts_d[d]),
                        "gpus": int(gpus_d[d]),
                        "free_gpus": int(free_d[d]),
                        "whole_free_hosts": int(whole_d[d]),
                    }
                )
        tiers.append(
            {
                "tier": names[level],
                "domains": len(index.domain_names[level]),
                "whole_free": int(np.sum(whole_d == hosts_d)),
                "partly_free": int(np.sum((free_d > 0) & (whole_d < hosts_d))),
                "full": int(np.sum(free_d == 0)),
                "largest_job_gpus": int(frag.largest_job.get(names[level], 0)),
            }
        )
    fits = []
    for size in COMMON_SIZES:
        row: dict[str, Any] = {"job_gpus": size}
        for level in range(0, top + 1):
            row[names[level]] = _fits(index, level, size, g=g, free=free, whole=whole)
        fits.append(row)
    states = Counter(n.state for n in known.values())
    out_of_service = int(index.host_gpus[~available].sum())
    return {
        "nodes": index.num_hosts,
        "unknown_nodes": len([n for n in nodes if n.name not in index.host_ids]),
        "nodes_by_state": dict(sorted(states.items())),
        "gpus_total": index.num_gpus,
        "gpus_allocated": used_total,
        "gpus_free": int(free.sum()),
        "gpus_out_of_service": out_of_service,
        "stranded_gpus": frag.stranded_gpus,
        "stranded_hosts": frag.stranded_hosts,
        "jobs_by_state": dict(sorted(job_states.items())),
        "domains": domains,
        "tiers": tiers,
        "fits": fits,
    }


def _fits(index: Any, level: int, size: int, *, g: int, free: Any, whole: Any) -> int:
    if size < g or g == 0:
        return int((free // size).sum())
    per_job = -(-size // g)
    if level == 0:
        return int(whole.sum()) if per_job == 1 else 0
    per_domain = index.sum_per_domain(level, whole.astype(np.int64))
    return int((per_domain // per_job).sum())


def query_status(
    topology_file: Path,
    slurm_conf: Path | None = None,
    runner: CommandRunner | None = None,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Run ``sinfo`` and ``squeue`` and build the status.

    Raises:
        TopologyError: the topology file is invalid.
        SlurmQueryError: a Slurm command failed.
    """
    import os

    topology = Topology.load(topology_file)
    run = runner or SubprocessRunner()
    env = dict(os.environ)
    if slurm_conf is not None:
        env["SLURM_CONF"] = str(slurm_conf)
    sinfo = run(["sinfo", "-h", "-N", "-O", SINFO_FORMAT], env=env, timeout=timeout)
    if sinfo.returncode != 0:
        raise SlurmQueryError(f"sinfo failed: {sinfo.stderr.strip()}")
    squeue = run(["squeue", "-h", "-o", "%T"], env=env, timeout=timeout)
    if squeue.returncode != 0:
        raise SlurmQueryError(f"squeue failed: {squeue.stderr.strip()}")
    jobs = Counter(line.strip().lower() for line in squeue.stdout.splitlines() if line.strip())
    return status_from_nodes(topology, parse_sinfo(sinfo.stdout), dict(jobs))
