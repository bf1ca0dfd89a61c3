"""The topology file format and the structural rules of :class:`topology.model.Topology`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from topology_builders import HostSpec, SwitchSpec, TopologySpec, two_level, with_switches

from topology.errors import TopologyError
from topology.model import ROOT, Topology
from topology.spec import dump_spec, load_spec, spec_from_data, spec_to_data
from topology.tiers import LEAF_400G, NVL72_RACK, POD_SPINE, TierSpec


def _reason(data: dict[str, Any]) -> str:
    with pytest.raises(TopologyError) as excinfo:
        Topology.from_spec(spec_from_data(data))
    return excinfo.value.reason


def _data() -> dict[str, Any]:
    return spec_to_data(two_level())


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip_is_lossless(tmp_path: Path, suffix: str) -> None:
    spec = with_switches(
        two_level(),
        SwitchSpec(name="p2", tier="pod"),
        SwitchSpec(
            name="p2l0", tier="leaf", parent="p2", hosts=("x1", HostSpec(name="x2", gpus=4))
        ),
    )
    path = tmp_path / f"t{suffix}"
    dump_spec(spec, path)
    again = load_spec(path)
    assert again == spec
    assert Topology.from_spec(again).hosts["x2"].gpus == 4
    dump_spec(again, tmp_path / f"u{suffix}")
    assert (tmp_path / f"u{suffix}").read_text() == path.read_text()


def test_levels_domains_and_graph() -> None:
    topo = Topology.from_spec(two_level(pods=2, leaves=3, hosts=4, gpus=8))
    assert topo.level_names == ("host", "leaf", "pod", "cluster")
    assert topo.num_gpus == 2 * 3 * 4 * 8
    assert [d.name for d in topo.domains_at(2)] == ["p0", "p1"]
    assert topo.domains["p1"].children == ("p1l0", "p1l1", "p1l2")
    assert topo.domains["p0l1"].hosts == ("h005", "h006", "h007", "h008")
    graph = topo.graph
    assert nx.is_arborescence(graph)
    assert graph.out_degree(ROOT) == 2
    gpus = [n for n, kind in graph.nodes(data="kind") if kind == "gpu"]
    assert len(gpus) == topo.num_gpus
    assert nx.shortest_path(graph, ROOT, ("gpu", "h005/3")) == [
        ROOT,
        ("switch", "p0"),
        ("switch", "p0l1"),
        ("host", "h005"),
        ("gpu", "h005/3"),
    ]


def test_bandwidth_tiers_follow_oversubscription() -> None:
    topo = Topology.from_spec(two_level())
    # NVLink, leaf NIC rate, non-blocking pod, then the pod's 1:7 uplinks.
    assert topo.bandwidths_gbytes_per_s == pytest.approx((450.0, 50.0, 50.0, 50.0 / 7.0))
    assert topo.latencies_us[0] < topo.latencies_us[1] < topo.latencies_us[3]


def test_nvl72_rack_is_the_nvlink_domain() -> None:
    racks = [
        SwitchSpec(
            name=f"rack{r}",
            tier="rack",
            parent="leaf0",
            hosts=tuple(f"r{r}h{i}" for i in range(18)),
        )
        for r in range(2)
    ]
    spec = TopologySpec(
        name="nvl72",
        gpus_per_host=4,
        tiers=(NVL72_RACK, LEAF_400G),
        switches=(SwitchSpec(name="leaf0", tier="leaf"), *racks),
    )
    topo = Topology.from_spec(spec)
    assert topo.nvlink_level == 1
    index = topo.index
    assert index.gpus_per_domain(1).tolist() == [72, 72]
    assert index.bandwidth_gbytes_per_s[1] == NVL72_RACK.bandwidth_gbytes_per_s


def test_cycle_is_rejected_with_its_path() -> None:
    data = _data()
    data["switches"][0]["parent"] = "p0l0"  # p0 -> p0l0 -> p0
    with pytest.raises(TopologyError, match=r"cycle: .*p0.*p0l0") as excinfo:
        Topology.from_spec(spec_from_data(data))
    assert excinfo.value.reason == "topology_cycle"


def test_host_under_two_leaves_is_rejected() -> None:
    data = _data()
    data["switches"][2]["hosts"].append("h001")
    with pytest.raises(TopologyError, match="'h001' is under two switches") as excinfo:
        Topology.from_spec(spec_from_data(data))
    assert excinfo.value.reason == "host_multiple_parents"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d["switches"][1].update(tier="spine"), "unknown_tier"),
        (lambda d: d["switches"][1].update(parent="nowhere"), "unknown_switch"),
        (lambda d: d["switches"].append({"name": "p0", "tier": "pod"}), "duplicate_name"),
        (lambda d: d["switches"][1]["hosts"].append("h001"), "duplicate_name"),
        (lambda d: d["switches"][1]["hosts"].append("p1"), "duplicate_name"),
        (lambda d: d["tiers"].append(d["tiers"][0]), "duplicate_name"),
        (lambda d: d["tiers"][0].update(name="cluster"), "invalid_topology"),
        (lambda d: d.update(switches=[]), "empty_topology"),
        # a leaf whose parent is another leaf
        (lambda d: d["switches"][2].update(parent="p0l0"), "tier_order"),
        # hosts cabled straight to a pod while the leaf tier is not optional
        (lambda d: d["switches"][0].update(hosts=["z1"]), "mixed_depth"),
        # a leaf with no pod above it
        (lambda d: d["switches"][1].pop("parent"), "mixed_depth"),
    ],
)
def test_structural_errors_have_stable_reasons(mutate: Any, reason: str) -> None:
    data = _data()
    mutate(data)
    assert _reason(data) == reason


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(gpus_per_host=0), "gpus_per_host"),
        (lambda d: d["switches"][1]["hosts"].append({"name": "z", "gpus": 0}), "gpus"),
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d["tiers"][0].update(bandwidth_gbytes_per_s=-1), "bandwidth_gbytes_per_s"),
        (lambda d: d.update(format="other/v9"), "format"),
    ],
)
def test_schema_errors_name_the_field(mutate: Any, fragment: str) -> None:
    data = _data()
    mutate(data)
    with pytest.raises(TopologyError, match=fragment) as excinfo:
        spec_from_data(data)
    assert excinfo.value.reason == "invalid_topology"
    assert "\n" not in str(excinfo.value)


def test_declared_optional_tier_may_be_skipped() -> None:
    data = _data()
    data["tiers"][0]["optional"] = True
    data["switches"][0]["hosts"] = ["z1", "z2"]  # cabled straight to pod p0
    topo = Topology.from_spec(spec_from_data(data))
    virtual = topo.domains["p0~leaf"]
    assert virtual.virtual
    assert virtual.hosts == ("z1", "z2")
    assert topo.hosts["z1"].parent == "p0~leaf"
    index = topo.index
    z1, h001 = index.host_id("z1"), index.host_id("h001")
    assert index.lowest_common_level(z1, index.host_id("z2")) == 1
    assert index.lowest_common_level(z1, h001) == 2


def test_nvlink_tier_above_network_tier_is_rejected() -> None:
    spec = TopologySpec(
        name="bad",
        tiers=(
            LEAF_400G,
            TierSpec(name="rack", bandwidth_gbytes_per_s=900, nvlink=True),
            POD_SPINE,
        ),
        switches=(SwitchSpec(name="x", tier="leaf", hosts=("a",)),),
    )
    with pytest.raises(TopologyError) as excinfo:
        Topology.from_spec(spec)
    assert excinfo.value.reason == "tier_order"


@pytest.mark.parametrize(
    ("text", "suffix", "fragment"),
    [
        ("name: [unclosed", ".yaml", "not valid YAML"),
        ("{not json", ".json", "not valid JSON"),
        ("- just\n- a list\n", ".yaml", "mapping"),
    ],
)
def test_malformed_files_give_one_line(
    tmp_path: Path, text: str, suffix: str, fragment: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(TopologyError, match=fragment) as excinfo:
        load_spec(path)
    assert "\n" not in str(excinfo.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as excinfo:
        load_spec(tmp_path / "absent.yaml")
    assert excinfo.value.reason == "unreadable_file"


def test_json_and_yaml_describe_the_same_topology(tmp_path: Path) -> None:
    spec = two_level(pods=1, leaves=2, hosts=2)
    (tmp_path / "t.json").write_text(json.dumps(spec_to_data(spec)))
    dump_spec(spec, tmp_path / "t.yaml")
    assert load_spec(tmp_path / "t.json") == load_spec(tmp_path / "t.yaml") == spec


def test_a_hosts_location_names_its_real_switches_nearest_first() -> None:
    spec = TopologySpec(
        name="mixed",
        tiers=(LEAF_400G.model_copy(update={"optional": True}), POD_SPINE),
        switches=(
            SwitchSpec(name="p0", tier="pod"),
            SwitchSpec(name="p0l0", tier="leaf", parent="p0", hosts=("a1",)),
            SwitchSpec(name="p1", tier="pod", hosts=("c1",)),
        ),
    )
    topology = Topology.from_spec(spec)

    assert topology.location("a1") == ("p0l0", "p0")
    # c1 hangs off the pod directly: the virtual leaf inserted above it is left out.
    assert any(d.virtual for d in topology.domains.values())
    assert topology.location("c1") == ("p1",)
    with pytest.raises(KeyError):
        topology.location("nope")
