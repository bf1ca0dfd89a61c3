"""The compact index: dense ids, contiguous domains, and capacity queries.

The index answers are checked against the networkx graph, which is the slow but obvious
source of truth.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from topology_builders import two_level

from topology.errors import InvalidInputError, UnknownHostError
from topology.model import Topology


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    pods = draw(st.integers(1, 3))
    leaves = draw(st.integers(1, 3))
    hosts = draw(st.integers(1, 4))
    gpus = draw(st.sampled_from([1, 2, 4, 8]))
    return Topology.from_spec(two_level(pods, leaves, hosts, gpus))


def _graph_lowest_common_level(topo: Topology, a: str, b: str) -> int:
    if a == b:
        return 0
    lca = nx.lowest_common_ancestor(topo.graph, ("host", a), ("host", b))
    return int(topo.graph.nodes[lca]["level"])


@settings(max_examples=40, deadline=None)
@given(topologies(), st.data())
def test_lowest_common_level_matches_graph(topo: Topology, data: st.DataObject) -> None:
    index = topo.index
    names = list(topo.hosts)
    a = data.draw(st.sampled_from(names))
    b = data.draw(st.sampled_from(names))
    ha, hb = index.host_id(a), index.host_id(b)
    expected = _graph_lowest_common_level(topo, a, b)
    assert index.lowest_common_level(ha, hb) == expected
    assert index.lowest_common_levels(np.array([ha]), np.array([hb])).tolist() == [expected]
    assert index.span_level(np.array([ha, hb])) == expected


@settings(max_examples=40, deadline=None)
@given(topologies(), st.data())
def test_capacity_per_domain_matches_graph(topo: Topology, data: st.DataObject) -> None:
    index = topo.index
    busy = np.array(
        data.draw(st.lists(st.booleans(), min_size=index.num_gpus, max_size=index.num_gpus))
    )
    free = index.free_gpus_per_host(busy)
    for level in range(1, index.num_levels):
        per_domain = index.free_gpus_per_domain(level, free)
        whole = index.free_hosts_per_domain(level, free)
        for d, name in enumerate(index.domain_names[level]):
            node = ("switch", name) if level < index.cluster_level else ("cluster", "cluster")
            hosts = [n[1] for n in nx.descendants(topo.graph, node) if n[0] == "host"]
            ids = sorted(index.host_id(h) for h in hosts)
            assert ids == index.hosts_under(level, d).tolist()
            gpu_ids = [index.gpu_offset[h] + g for h in ids for g in range(index.host_gpus[h])]
            assert per_domain[d] == int((~busy[gpu_ids]).sum())
            assert whole[d] == sum(
                1 for h in ids if not busy[index.gpu_offset[h] : index.gpu_offset[h + 1]].any()
            )


def test_ancestors_and_ranges() -> None:
    index = Topology.from_spec(two_level(pods=2, leaves=2, hosts=3)).index
    h = index.host_id("h010")  # pod 1, leaf 1, first host
    assert [index.domain_names[lv][d] for lv, d in enumerate(index.ancestors_of(h))] == [
        "h010",
        "p1l1",
        "p1",
        "cluster",
    ]
    assert index.hosts_under(2, index.domain_id(2, "p1")).tolist() == list(range(6, 12))
    assert index.hosts_per_domain(1).tolist() == [3, 3, 3, 3]
    assert index.gpus_per_domain(2).tolist() == [48, 48]
    assert index.nvlink_domain_of(np.array([0, h])).tolist() == [0, h]


def test_index_is_read_only() -> None:
    index = Topology.from_spec(two_level()).index
    with pytest.raises(ValueError, match="read-only"):
        index.ancestors[0, 0] = 5


def test_busy_mask_entries() -> None:
    index = Topology.from_spec(two_level(pods=1, leaves=1, hosts=2, gpus=4)).index
    busy = index.busy_mask(["h001", "# comment", "", "h002:3"])
    assert busy.tolist() == [True] * 4 + [False, False, False, True]
    assert index.free_gpus_per_host(busy).tolist() == [0, 3]


@pytest.mark.parametrize(
    ("entry", "error", "reason"),
    [
        ("nohost", UnknownHostError, "unknown_host"),
        ("h001:4", InvalidInputError, "unknown_gpu"),
        ("h001:x", InvalidInputError, "unknown_gpu"),
    ],
)
def test_busy_mask_rejects_unknown(entry: str, error: type[Exception], reason: str) -> None:
    index = Topology.from_spec(two_level(pods=1, leaves=1, hosts=2, gpus=4)).index
    with pytest.raises(error) as excinfo:
        index.busy_mask([entry])
    assert getattr(excinfo.value, "reason", None) == reason


def test_unknown_tier_and_domain() -> None:
    index = Topology.from_spec(two_level()).index
    assert index.level("pod") == 2
    with pytest.raises(InvalidInputError) as excinfo:
        index.level("spine")
    assert excinfo.value.reason == "unknown_tier"
    with pytest.raises(InvalidInputError) as excinfo:
        index.domain_id(1, "p9l9")
    assert excinfo.value.reason == "unknown_domain"
