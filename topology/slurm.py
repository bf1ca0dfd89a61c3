"""Export a topology as a Slurm ``topology.conf`` for ``topology/tree`` or ``topology/block``.

Both exports are deterministic text (no timestamps), so they can be diffed and kept as golden
files. Host names are written as they are (they must match ``NodeName`` in ``slurm.conf``);
switch and block names are made Slurm-safe (below).

**topology/tree** (every Slurm version; the only plugin on Slurm 22.05): one
``SwitchName=<name> Nodes=<hostlist>`` line per lowest switch and one
``SwitchName=<name> Switches=<hostlist>`` line per upper switch, leaves first. Rules relied on
(Slurm's ``topology.conf(5)`` and ``switch_record.c``):

- A switch line may not carry both ``Nodes`` and ``Switches``. Where hosts are cabled straight
  to an upper switch that also has child switches (a skipped optional tier), those hosts get a
  synthetic leaf switch ``<switch>_nodes`` under it.
- No job spans switches without a common ancestor, so when there is more than one top-level
  switch a root switch named after the topology joins them (the core, which the model keeps
  as its implicit cluster level).
- Virtual domains (skipped optional tiers) have no switch: they are omitted and their children
  attach to the nearest real ancestor. Switches with no hosts below them are omitted.
- ``LinkSpeed`` is omitted: Slurm parses it but does not use it, and its units are arbitrary,
  so writing tier bandwidths there would suggest an effect it does not have.

**topology/block** (Slurm >= 23.11): one ``BlockName=<name> Nodes=<hostlist>`` line per base
block, in depth-first order, then ``BlockSizes=``. Base blocks are the domains of the nearest
switch tier by default (a leaf, rail group or segment; the rack for NVL72 fabrics), or of the
tier named by ``block_tier``. Semantics relied on (``topology.conf(5)`` and Slurm's
``block_record.c``):

- The first ``BlockSizes`` value is the *planning* base block size: every block must hold at
  least that many nodes (slurmctld refuses to start otherwise), and Slurm counts a job's base
  blocks as ``ceil(nodes / base size)``. Blocks need not be equal: we emit the smallest
  block's node count, and say so in a comment when blocks differ (then Slurm plans
  conservatively with the smallest size).
- Every further value must be the base size times a power of two (at most 2^15). Slurm forms
  the higher-level blocks by aggregating 2^k *consecutive* base blocks in file order, aligned
  at multiples of 2^k. A job larger than the largest size may use any blocks.
- So we list base blocks depth-first and emit the sizes base x 2^k only up to the largest k
  for which no aligned aggregate straddles two domains of the tier above the blocks: 2^k must
  divide the block count of every such domain but the last (with one such domain, 2^k only
  has to fit in it). A 16-leaf pod gives five sizes (1 to 16 leaves); pods of 48, 42 and 29
  ToRs give two. Pass ``block_sizes`` to choose others (validated against the rules above).

**Names.** Slurm names are made of ``[A-Za-z0-9_-]``: every other character becomes ``_``
(``G6/P10/S14`` gives ``G6_P10_S14``; ``.`` is replaced too because ``SLURM_TOPOLOGY_ADDR``
joins switch names with dots). Names are cut to 64 characters (Slurm's limit) with a stable
hash suffix, and a name already taken gets ``_2``, ``_3``... in depth-first order. Host names
containing whitespace or ``,[]=#"'\\`` cannot be written and raise ``invalid_host_name``.

Must not import grpc, generated protos, databases, subprocess, ``placement``, ``scheduler`` or
``agents``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from topology.errors import TopologyError
from topology.hostlist import compress_hostlist, expand_hostlist
from topology.index import TopologyIndex
from topology.model import Topology

PLUGINS = ("tree", "block")
"""The ``TopologyPlugin`` kinds :func:`export_topology_conf` writes."""
MAX_NAME = 64
"""Longest switch name Slurm accepts."""
MAX_BLOCK_LEVEL = 15
"""Largest k in ``BlockSizes`` = base x 2^k."""

ROOT_COMMENT = "# root: joins the top-level switches so that jobs may span them"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_BAD_HOST_CHARS = frozenset(",[]=#\"'\\")


def export_topology_conf(
    topology: Topology,
    plugin: str = "tree",
    *,
    block_tier: str | None = None,
    block_sizes: Sequence[int] | None = None,
) -> str:
    """``topology.conf`` text for ``plugin`` (``tree`` or ``block``).

    Args:
        topology: the validated topology.
        plugin: ``tree`` (``TopologyPlugin=topology/tree``) or ``block``.
        block_tier: ``block`` only: the tier whose domains are the base blocks.
        block_sizes: ``block`` only: explicit ``BlockSizes``.

    Raises:
        TopologyError: ``invalid_input`` for an unknown plugin or block options given to
            ``tree``; otherwise as :func:`export_tree` / :func:`export_block`.
    """
    if plugin == "tree":
        if block_tier is not None or block_sizes is not None:
            raise TopologyError(
                "block_tier and block_sizes apply to the block plugin only",
                reason="invalid_input",
            )
        return export_tree(topology)
    if plugin == "block":
        return export_block(topology, block_tier=block_tier, block_sizes=block_sizes)
    raise TopologyError(
        f"unknown Slurm topology plugin {plugin!r} (choose from {', '.join(PLUGINS)})",
        reason="invalid_input",
    )


# ---------------------------------------------------------------- tree


@dataclass
class _Switch:
    slurm: str
    level: int
    tier: str
    children: list[_Switch] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    def populated(self) -> bool:
        return bool(self.hosts) or any(c.populated() for c in self.children)


def export_tree(topology: Topology) -> str:
    """``topology.conf`` for ``TopologyPlugin=topology/tree`` (see the module docstring).

    Raises:
        TopologyError: ``invalid_host_name`` for a host name Slurm cannot parse.
    """
    _check_hosts(topology)
    names = _NameAllocator()
    switches: dict[str, _Switch] = {
        d.name: _Switch(names.take(d.name), d.level, d.tier)
        for d in topology.domains.values()
        if not d.virtual
    }
    root = _Switch("", len(topology.tiers) + 1, "root")
    for name, switch in switches.items():
        parent = _real_ancestor(topology, topology.domains[name].parent)
        (root if parent is None else switches[parent]).children.append(switch)
    for host in topology.hosts.values():
        parent = _real_ancestor(topology, host.parent)
        (root if parent is None else switches[parent]).hosts.append(host.name)
    if len([c for c in root.children if c.populated()]) > 1 or root.hosts:
        root.slurm = names.take(topology.name)

    direct: list[str] = []
    by_level: dict[int, tuple[str, list[str]]] = {}
    for switch in [*switches.values(), root]:
        if not switch.slurm or not switch.populated():
            continue
        children = [c.slurm for c in switch.children if c.populated()]
        if switch.hosts and children:
            synthetic = names.take(f"{switch.slurm}_nodes")
            direct.append(f"SwitchName={synthetic} Nodes={compress_hostlist(switch.hosts)}")
            children.append(synthetic)
        if children:
            line = f"SwitchName={switch.slurm} Switches={compress_hostlist(children)}"
        else:
            line = f"SwitchName={switch.slurm} Nodes={compress_hostlist(switch.hosts)}"
        label = ROOT_COMMENT if switch is root else f"{switch.tier}"
        by_level.setdefault(switch.level, (label, []))[1].append(line)

    out = _header(topology, "tree")
    out.append("# LinkSpeed is omitted: Slurm parses it but does not use it.")
    if direct:
        out.append(f"# hosts cabled straight to an upper switch: {len(direct)} switch(es)")
        out.extend(direct)
    for level in sorted(by_level):
        label, lines = by_level[level]
        out.append(label if label == ROOT_COMMENT else f"# {label}: {len(lines)} switch(es)")
        out.extend(lines)
    return "\n".join(out) + "\n"


def _real_ancestor(topology: Topology, name: str | None) -> str | None:
    while name is not None and topology.domains[name].virtual:
        name = topology.domains[name].parent
    return name


# ---------------------------------------------------------------- block


def export_block(
    topology: Topology,
    *,
    block_tier: str | None = None,
    block_sizes: Sequence[int] | None = None,
) -> str:
    """``topology.conf`` for ``TopologyPlugin=topology/block`` (see the module docstring).

    Args:
        topology: the validated topology.
        block_tier: the tier whose domains are the base blocks; default the nearest tier.
        block_sizes: explicit ``BlockSizes`` (node counts); default derived from the tree.

    Raises:
        TopologyError: ``unknown_tier`` for a ``block_tier`` that is not a switch tier,
            ``invalid_block_sizes`` for sizes Slurm would refuse, ``invalid_host_name`` for
            a host name Slurm cannot parse.
    """
    _check_hosts(topology)
    index = topology.index
    if not topology.tiers:
        raise TopologyError("a topology without switch tiers has no blocks", reason="unknown_tier")
    tier_names = [t.name for t in topology.tiers]
    if block_tier is None:
        level = 1
    elif block_tier in tier_names:
        level = tier_names.index(block_tier) + 1
    else:
        raise TopologyError(
            f"block tier {block_tier!r} is not a switch tier (tiers: {', '.join(tier_names)})",
            reason="unknown_tier",
        )
    tier = tier_names[level - 1]
    sizes_per_block = index.hosts_per_domain(level)
    base = int(sizes_per_block.min())
    smallest, largest = base, int(sizes_per_block.max())
    parent_tier = tier_names[level] if level < len(tier_names) else None
    if block_sizes is None:
        sizes = [base << k for k in range(_max_block_level(index, level) + 1)]
    else:
        sizes = _checked_block_sizes(block_sizes, smallest)

    names = _NameAllocator()
    lines: list[str] = []
    for block, domain in enumerate(index.domain_names[level]):
        hosts = [index.host_names[h] for h in index.hosts_under(level, block)]
        lines.append(f"BlockName={names.take(domain)} Nodes={compress_hostlist(hosts)}")

    out = _header(topology, "block")
    count = len(lines)
    span = f"{smallest}" if smallest == largest else f"{smallest} to {largest}"
    out.append(f"# Base blocks: the {count} {tier} domain(s), {span} nodes each, depth-first.")
    if smallest != largest:
        out.append("# Blocks differ in size; Slurm requires every block to hold at least the")
        out.append("# first BlockSizes value and plans with it as the base block size.")
    if block_sizes is None:
        within = f"one {parent_tier}" if parent_tier else "the cluster"
        out.append(
            f"# BlockSizes: aggregates of up to {sizes[-1] // sizes[0]} consecutive base "
            f"block(s) stay inside {within};"
        )
        out.append("# a job larger than the largest size may use any blocks.")
    out.extend(lines)
    out.append(f"BlockSizes={','.join(str(s) for s in sizes)}")
    return "\n".join(out) + "\n"


def _max_block_level(index: TopologyIndex, level: int) -> int:
    """Largest k such that aligned aggregates of 2^k base blocks stay in one parent domain."""
    blocks = index.num_domains(level)
    if level + 1 >= index.cluster_level:
        counts = [blocks]
    else:
        parent_of_block = index.ancestors[index.domain_start[level], level + 1]
        counts = np.bincount(parent_of_block).tolist()
    k = blocks.bit_length() - 1 if len(counts) == 1 else min(_twos(c) for c in counts[:-1])
    return min(k, MAX_BLOCK_LEVEL)


def _twos(n: int) -> int:
    """The exponent of the largest power of two dividing ``n`` (n >= 1)."""
    return (n & -n).bit_length() - 1


def _checked_block_sizes(sizes: Sequence[int], smallest_block: int) -> list[int]:
    values = list(sizes)
    if not values:
        raise TopologyError("block_sizes must not be empty", reason="invalid_block_sizes")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TopologyError(
                f"block_sizes must be positive integers, got {value!r}",
                reason="invalid_block_sizes",
            )
    base = values[0]
    if base > smallest_block:
        raise TopologyError(
            f"the base block size {base} exceeds the smallest block ({smallest_block} nodes); "
            "Slurm requires every block to hold at least the base size",
            reason="invalid_block_sizes",
        )
    previous = 0
    for value in values:
        ratio, rest = divmod(value, base)
        if rest or ratio & (ratio - 1) or ratio > (1 << MAX_BLOCK_LEVEL) or value <= previous:
            raise TopologyError(
                f"block size {value} is not the base size {base} times a power of two (at "
                f"most 2^{MAX_BLOCK_LEVEL}) larger than the previous size",
                reason="invalid_block_sizes",
            )
        previous = value
    return values


# ---------------------------------------------------------------- shared


class _NameAllocator:
    """Slurm-safe, unique names, handed out in call order."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, name: str) -> str:
        base = slurm_name(name)
        candidate = base
        n = 1
        while candidate in self.used:
            n += 1
            candidate = _fit(base, f"_{n}")
        self.used.add(candidate)
        return candidate


def slurm_name(name: str) -> str:
    """``name`` made of ``[A-Za-z0-9_-]`` and at most 64 characters (see module docstring)."""
    safe = _UNSAFE.sub("_", name) or "_"
    if len(safe) <= MAX_NAME:
        return safe
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return _fit(safe, f"-{digest}")


def _fit(base: str, suffix: str) -> str:
    return base[: MAX_NAME - len(suffix)] + suffix


def _check_hosts(topology: Topology) -> None:
    for name in topology.hosts:
        if any(ch.isspace() or not ch.isprintable() or ch in _BAD_HOST_CHARS for ch in name):
            raise TopologyError(
                f"host name {name!r} cannot be written to topology.conf (whitespace or one of "
                "',[]=#\"'\\')",
                reason="invalid_host_name",
            )


def _header(topology: Topology, plugin: str) -> list[str]:
    title = "".join(ch if ch.isprintable() else "?" for ch in topology.name)
    return [
        f"# Slurm topology.conf for TopologyPlugin=topology/{plugin}, written by firsthop.",
        f"# Topology {title!r}: {len(topology.hosts)} hosts, tiers "
        f"{', '.join(t.name for t in topology.tiers) or '(none)'}.",
    ]


__all__ = [
    "PLUGINS",
    "compress_hostlist",
    "expand_hostlist",
    "export_block",
    "export_topology_conf",
    "export_tree",
    "slurm_name",
]
