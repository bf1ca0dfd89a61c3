"""Fabric generators: shapes, names, tiers, argument errors and file round trips."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from topology.errors import TopologyError
from topology.generators import GENERATORS, dual_plane, fat_tree, rail_optimized
from topology.generators._layout import MAX_HOSTS
from topology.model import Topology
from topology.spec import TopologySpec, dump_spec, load_spec


def build(spec: TopologySpec) -> Topology:
    return Topology.from_spec(spec)


def untyped(value: object) -> Any:
    """``value`` with its type hidden, to pass ill-typed arguments on purpose."""
    return value


# ---------------------------------------------------------------- fat tree


def test_fat_tree_counts_per_level() -> None:
    index = build(fat_tree(3, 4, 5, gpus_per_host=2)).index
    assert index.level_names == ("host", "leaf", "pod", "cluster")
    assert [index.num_domains(level) for level in range(index.num_levels)] == [60, 12, 3, 1]
    assert index.num_gpus == 120
    assert index.hosts_per_domain(1).tolist() == [5] * 12
    assert index.hosts_per_domain(2).tolist() == [20] * 3


def test_fat_tree_names_are_depth_first_and_zero_padded() -> None:
    spec = fat_tree(2, 2, 3)
    assert [s.name for s in spec.switches] == [
        "pod00",
        "pod00-leaf00",
        "pod00-leaf01",
        "pod01",
        "pod01-leaf00",
        "pod01-leaf01",
    ]
    assert spec.switches[1].hosts == ("h0001", "h0002", "h0003")
    assert spec.switches[-1].hosts == ("h0010", "h0011", "h0012")
    assert spec.switches[-1].parent == "pod01"
    index = build(spec).index
    assert list(index.host_names) == sorted(index.host_names)
    assert index.host_names[0] == "h0001"


@pytest.mark.parametrize(
    ("shape", "first", "last"),
    [
        ((1, 1, 5), "h0001", "h0005"),
        ((1, 1, 9999), "h0001", "h9999"),
        ((1, 1, 10000), "h00001", "h10000"),
    ],
)
def test_host_number_width_follows_total(
    shape: tuple[int, int, int], first: str, last: str
) -> None:
    spec = fat_tree(*shape)
    hosts = [h for s in spec.switches for h in s.hosts]
    assert hosts[0] == first
    assert hosts[-1] == last
    assert len({len(str(h)) for h in hosts}) == 1


def test_switch_index_width_follows_sibling_count() -> None:
    spec = fat_tree(11, 101, 1)
    names = [s.name for s in spec.switches]
    assert names[0] == "pod00"
    assert names[1] == "pod00-leaf000"
    assert names[-1] == "pod10-leaf100"


def test_fat_tree_98304_gpus_well_under_a_second() -> None:
    start = time.perf_counter()
    spec = fat_tree(24, 16, 32, gpus_per_host=8)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    index = build(spec).index
    assert index.num_gpus == 98_304
    assert index.num_hosts == 12_288
    assert index.num_domains(1) == 384
    assert index.num_domains(2) == 24
    assert index.host_names[0] == "h00001"
    assert index.host_names[-1] == "h12288"


def test_fat_tree_tiers_and_bandwidths() -> None:
    topo = build(fat_tree(2, 2, 2, oversubscription=4.0))
    assert [t.name for t in topo.tiers] == ["leaf", "pod"]
    assert topo.tiers[1].oversubscription == 4.0
    assert topo.bandwidths_gbytes_per_s == (450.0, 50.0, 50.0, 12.5)
    assert topo.name == "fat-tree-2x2x2"
    assert build(fat_tree(1, 1, 1, name="lab")).name == "lab"


def test_fat_tree_nvl72_racks_are_nvlink_domains() -> None:
    spec = fat_tree(2, 2, 36, gpus_per_host=4, nvlink_rack_hosts=18)
    topo = build(spec)
    index = topo.index
    assert index.level_names == ("host", "rack", "leaf", "pod", "cluster")
    assert topo.nvlink_level == 1
    assert index.nvlink_level == 1
    assert index.num_domains(1) == 8
    assert index.gpus_per_domain(1).tolist() == [72] * 8
    assert topo.tiers[0].nvlink
    assert topo.host_fabric.bandwidth_gbytes_per_s == topo.tiers[0].bandwidth_gbytes_per_s
    rack = next(s for s in spec.switches if s.tier == "rack")
    assert rack.name == "pod00-leaf00-rack00"
    assert rack.parent == "pod00-leaf00"
    hosts = np.array([index.host_id("h0001"), index.host_id("h0018"), index.host_id("h0019")])
    domains = index.nvlink_domain_of(hosts).tolist()
    assert domains[0] == domains[1] != domains[2]


# ---------------------------------------------------------------- rail-optimized


def test_rail_optimized_shape_and_rails() -> None:
    topo = build(rail_optimized(pods=2, groups_per_pod=3, hosts_per_group=32))
    index = topo.index
    assert index.level_names == ("host", "rail_group", "pod", "cluster")
    assert [index.num_domains(level) for level in range(1, 3)] == [6, 2]
    assert index.gpus_per_domain(1).tolist() == [256] * 6
    assert topo.tiers[0].rails == 8
    assert topo.tiers[1].oversubscription == 1.0
    assert topo.domains["pod01-rg02"].hosts[-1] == "h0192"


def test_rail_optimized_rails_follow_gpus_per_host() -> None:
    spec = rail_optimized(1, 1, 4, 4)
    assert spec.tiers[0].rails == 4
    assert spec.gpus_per_host == 4


def test_rail_optimized_defaults_are_four_superpod_units() -> None:
    index = build(rail_optimized()).index
    assert index.num_gpus == 1024
    assert index.hosts_per_domain(1).tolist() == [32] * 4


# ---------------------------------------------------------------- dual plane


def test_dual_plane_defaults_are_one_hpn_pod() -> None:
    topo = build(dual_plane())
    index = topo.index
    assert index.level_names == ("host", "segment", "pod", "cluster")
    assert index.num_domains(1) == 15
    assert index.num_gpus == 15_360
    assert index.gpus_per_domain(1).tolist() == [1024] * 15
    segment, pod = topo.tiers
    assert segment.rails == 8
    assert segment.oversubscription == pytest.approx(16 / 15)
    assert pod.oversubscription == 15.0
    assert topo.bandwidths_gbytes_per_s[2] == pytest.approx(50.0 * 15 / 16)
    assert topo.bandwidths_gbytes_per_s[3] == pytest.approx(50.0 * 15 / 16 / 15)


def test_dual_plane_pods_and_names() -> None:
    spec = dual_plane(pods=2, segments_per_pod=3, hosts_per_segment=2)
    assert [s.name for s in spec.switches][:2] == ["pod00", "pod00-seg00"]
    assert build(spec).index.num_domains(2) == 2


# ---------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize(
    "factory",
    [
        lambda: fat_tree(2, 3, 4),
        lambda: fat_tree(1, 2, 8, 4, nvlink_rack_hosts=4, name="nvl"),
        lambda: rail_optimized(2, 2, 4),
        lambda: dual_plane(1, 2, 4),
    ],
    ids=["fat-tree", "nvl72", "rail-optimized", "dual-plane"],
)
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_dump_load_round_trip(
    factory: Callable[[], TopologySpec], suffix: str, tmp_path: Path
) -> None:
    spec = factory()
    path = tmp_path / f"topo{suffix}"
    dump_spec(spec, path)
    loaded = load_spec(path)
    assert loaded == spec
    assert build(loaded).index.host_names == build(spec).index.host_names


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fat_tree(0, 1, 1), "pods must be at least 1"),
        (lambda: fat_tree(1, -2, 1), "leaves_per_pod must be at least 1"),
        (lambda: fat_tree(1, 1, 0), "hosts_per_leaf must be at least 1"),
        (lambda: fat_tree(1, 1, 1, 0), "gpus_per_host must be at least 1"),
        (lambda: fat_tree(untyped(1.5), 1, 1), "pods must be an integer"),
        (lambda: fat_tree(True, 1, 1), "pods must be an integer"),
        (lambda: fat_tree(1, 1, 1, oversubscription=0.5), "oversubscription must be a finite"),
        (lambda: fat_tree(1, 1, 1, oversubscription=float("inf")), "finite ratio"),
        (lambda: fat_tree(1, 1, 1, oversubscription=untyped("7")), "must be a number"),
        (lambda: fat_tree(1, 1, 1, name=" "), "name must be a non-empty string"),
        (lambda: fat_tree(1, 1, 36, nvlink_rack_hosts=5), "multiple of nvlink_rack_hosts"),
        (lambda: fat_tree(1, 1, 4, nvlink_rack_hosts=0), "nvlink_rack_hosts must be at least"),
        (lambda: fat_tree(1024, 1024, 2), "generators build at most"),
        (lambda: rail_optimized(groups_per_pod=0), "groups_per_pod must be at least 1"),
        (lambda: rail_optimized(hosts_per_group=0), "hosts_per_group must be at least 1"),
        (lambda: dual_plane(segments_per_pod=0), "segments_per_pod must be at least 1"),
        (lambda: dual_plane(hosts_per_segment=-1), "hosts_per_segment must be at least 1"),
        (lambda: dual_plane(tor_oversubscription=0.9), "tor_oversubscription must be"),
    ],
)
def test_invalid_arguments(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(TopologyError, match=match) as excinfo:
        call()
    assert excinfo.value.reason == "invalid_generator_args"
    assert excinfo.value.status_code == "INVALID_ARGUMENT"


def test_one_host_over_the_limit_is_rejected() -> None:
    with pytest.raises(TopologyError) as excinfo:
        fat_tree(1, 1, MAX_HOSTS + 1)
    assert excinfo.value.reason == "invalid_generator_args"


def test_registry_maps_cli_names() -> None:
    assert set(GENERATORS) == {"fat-tree", "rail-optimized", "dual-plane"}
    assert GENERATORS["fat-tree"] is fat_tree
    assert GENERATORS["rail-optimized"] is rail_optimized
    assert GENERATORS["dual-plane"] is dual_plane
    for generator in GENERATORS.values():
        spec = generator(1, 2, 2, gpus_per_host=4)
        assert build(spec).index.num_gpus == 16
    with pytest.raises(TypeError):
        GENERATORS["x"] = fat_tree  # type: ignore[index]
