"""Builders for the Slurm plug-in tests: the lab topology and an independent rank table.

The lab topology has six 4-GPU nodes under two leaves whose names interleave (``la``: n1,
n3, n5; ``lb``: n2, n4, n6), as on clusters whose node names do not follow the cabling, and
4:1 oversubscribed leaf uplinks, so a DP group split across the leaves costs more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from placement import (
    Parallelism,
    Placement,
    PlacementRequest,
    Snapshot,
    place,
)
from topology.csv_import import parse_hosts_csv
from topology.model import Topology
from topology.spec import TopologySpec

GPUS = 4
NODES = 6


def lab_spec() -> TopologySpec:
    """The lab topology (see the module docstring)."""
    rows = "".join(f"n{i},{GPUS},{'la' if i % 2 else 'lb'}\n" for i in range(1, NODES + 1))
    return parse_hosts_csv(
        "host,gpus,leaf\n" + rows,
        name="lab",
        tier_overrides={"leaf": {"oversubscription": 4.0}},
    )


def lab() -> Topology:
    """The lab topology, built."""
    return Topology.from_spec(lab_spec())


def expected_ranks(
    topology: Topology, nodes: Sequence[str], **sizes: int
) -> dict[int, tuple[str, int]]:
    """rank -> (node, GPU) by calling the placement engine directly on ``nodes`` only."""
    index = topology.index
    keep = {index.host_id(n) for n in nodes}
    others = frozenset(h for h in range(index.num_hosts) if h not in keep)
    snapshot = Snapshot(index, np.zeros(index.num_gpus, dtype=np.bool_), others)
    par = Parallelism(**sizes)
    result = place(snapshot, PlacementRequest(gpus=par.world_size, parallelism=par))
    assert isinstance(result, Placement), result
    return {row["rank"]: (row["host"], row["gpu"]) for row in result.ranks.rows(index)}


def leaf_of(node: str) -> str:
    """The lab leaf of a node."""
    return "la" if int(node[1:]) % 2 else "lb"
