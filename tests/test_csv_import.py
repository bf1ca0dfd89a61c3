"""Hosts CSV import: the example file, the real Lingjun topology, ordering, tiers, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from topology.csv_import import (
    SPINE_NONBLOCKING,
    default_tiers,
    import_hosts_csv,
    parse_hosts_csv,
)
from topology.errors import TopologyError
from topology.model import Topology
from topology.spec import HostSpec, dump_spec, load_spec
from topology.tiers import CORE, LEAF_400G, POD_SPINE, TierSpec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hosts.csv"
LINGJUN = ROOT / "data" / "topology" / "crux_lingjun_2023_topo.csv"


def parse(text: str) -> Topology:
    return Topology.from_spec(parse_hosts_csv(text, name="t"))


def lingjun_csv(tmp_path: Path) -> Path:
    """The Lingjun file with its columns reordered to ``host,ASW,PSW,DSW``."""
    with LINGJUN.open(newline="", encoding="utf-8") as src:
        rows = list(csv.reader(src))
    assert rows[0] == ["ip", "DSW", "PSW", "ASW"]
    path = tmp_path / "lingjun.csv"
    with path.open("w", newline="", encoding="utf-8") as dst:
        writer = csv.writer(dst)
        writer.writerow(["host", "ASW", "PSW", "DSW"])
        writer.writerows([ip, asw, psw, dsw] for ip, dsw, psw, asw in rows[1:])
    return path


# ---------------------------------------------------------------- real files


def test_example_csv_identifies_switches_by_path() -> None:
    spec = import_hosts_csv(EXAMPLE)
    topo = Topology.from_spec(spec)
    index = topo.index
    assert spec.name == "hosts"
    assert [t.name for t in spec.tiers] == ["leaf", "spine"]
    assert index.num_hosts == 12
    assert list(index.domain_names[1]) == ["s1/l01", "s1/l02", "s2/l01"]
    assert list(index.domain_names[2]) == ["s1", "s2"]
    assert index.hosts_per_domain(1).tolist() == [4, 4, 4]
    assert spec.gpus_per_host == 8
    assert topo.hosts["h0008"].gpus == 4
    assert index.num_gpus == 92


def test_lingjun_topology(tmp_path: Path) -> None:
    spec = import_hosts_csv(lingjun_csv(tmp_path), name="lingjun")
    index = Topology.from_spec(spec).index
    assert index.level_names == ("host", "ASW", "PSW", "DSW", "cluster")
    assert index.num_hosts == 847
    assert index.num_domains(1) == 119
    assert index.num_domains(2) == 3
    assert index.num_domains(3) == 1
    assert sorted(index.hosts_per_domain(2).tolist()) == [179, 306, 362]
    assert index.domain_names[3] == ("G6",)
    assert set(index.domain_names[2]) == {"G6/P8", "G6/P10", "G6/P12"}
    # ASW names repeat under different PSWs; each (PSW, ASW) path is its own ToR.
    asw_names = [name.rsplit("/", 1)[1] for name in index.domain_names[1]]
    assert len(set(asw_names)) == 48
    assert index.num_gpus == 847 * 8


def test_lingjun_round_trips_through_the_file_format(tmp_path: Path) -> None:
    spec = import_hosts_csv(lingjun_csv(tmp_path))
    path = tmp_path / "lingjun.yaml"
    dump_spec(spec, path)
    assert load_spec(path) == spec


def test_lingjun_copy_is_unchanged() -> None:
    import hashlib

    digest = hashlib.sha256(LINGJUN.read_bytes()).hexdigest()
    assert digest == "95b67f62c4ecb25fd1be816a96c5b10808c4604a83effd4a79d13461a05a3af6"


# ---------------------------------------------------------------- ordering


def test_rows_are_grouped_depth_first_in_first_appearance_order() -> None:
    text = "\n".join(
        [
            "host,leaf,spine",
            "a1,L2,S2",
            "b1,L1,S1",
            "a2,L1,S2",
            "b2,L1,S1",
            "a3,L2,S2",
            "b3,L9,S1",
        ]
    )
    index = parse(text).index
    assert list(index.domain_names[2]) == ["S2", "S1"]
    assert list(index.domain_names[1]) == ["S2/L2", "S2/L1", "S1/L1", "S1/L9"]
    assert list(index.host_names) == ["a1", "a3", "a2", "b1", "b2", "b3"]


def test_missing_gpus_column_uses_the_default() -> None:
    spec = parse_hosts_csv("host,leaf\nh1,l1\nh2,l1\n", name="t", default_gpus=4)
    assert spec.gpus_per_host == 4
    assert Topology.from_spec(spec).num_gpus == 8


def test_most_common_gpu_count_becomes_the_file_default() -> None:
    spec = parse_hosts_csv("host,gpus,leaf\nh1,4,l1\nh2,8,l1\nh3,4,l1\n", name="t")
    assert spec.gpus_per_host == 4
    assert spec.switches[0].hosts == ("h1", HostSpec(name="h2", gpus=8), "h3")


def test_whitespace_blank_lines_and_bom_are_tolerated() -> None:
    topo = parse("\ufeffHost , GPUS , leaf\n\n h1 , 2 , l1 \n\n")
    assert topo.hosts["h1"].gpus == 2
    assert [t.name for t in topo.tiers] == ["leaf"]


# ---------------------------------------------------------------- tiers


def test_default_tiers_by_position() -> None:
    def shape(names: list[str]) -> list[TierSpec]:
        return [t.model_copy(update={"name": "x"}) for t in default_tiers(names)]

    def base(tier: TierSpec) -> TierSpec:
        return tier.model_copy(update={"name": "x"})

    assert shape(["a"]) == [base(LEAF_400G)]
    assert shape(["a", "b"]) == [base(LEAF_400G), base(POD_SPINE)]
    assert shape(["a", "b", "c"]) == [base(LEAF_400G), base(POD_SPINE), base(CORE)]
    assert shape(["a", "b", "c", "d"]) == [
        base(LEAF_400G),
        base(SPINE_NONBLOCKING),
        base(POD_SPINE),
        base(CORE),
    ]
    assert [t.name for t in default_tiers(["tor", "spine", "core"])] == ["tor", "spine", "core"]


def test_tier_overrides_replace_fields() -> None:
    spec = parse_hosts_csv(
        "host,leaf,spine\nh1,l1,s1\n",
        name="t",
        tier_overrides={"spine": {"oversubscription": 3.0, "bandwidth_gbytes_per_s": 25.0}},
    )
    spine = spec.tiers[1]
    assert spine.oversubscription == 3.0
    assert spine.bandwidth_gbytes_per_s == 25.0
    assert spine.latency_us == POD_SPINE.latency_us
    assert spec.tiers[0] == LEAF_400G


def test_tier_override_for_unknown_tier() -> None:
    with pytest.raises(TopologyError, match="unknown tier") as excinfo:
        parse_hosts_csv("host,leaf\nh1,l1\n", name="t", tier_overrides={"pod": {}})
    assert excinfo.value.reason == "unknown_tier"


def test_tier_override_with_invalid_value() -> None:
    with pytest.raises(TopologyError, match="oversubscription") as excinfo:
        parse_hosts_csv(
            "host,leaf\nh1,l1\n", name="t", tier_overrides={"leaf": {"oversubscription": 0.5}}
        )
    assert excinfo.value.reason == "invalid_input"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "reason", "match"),
    [
        ("", "invalid_csv", "empty file"),
        ("\n \n", "invalid_csv", "empty file"),
        ("name,leaf\nh1,l1\n", "invalid_csv", "first column must be 'host'"),
        ("host,gpus\nh1,8\n", "invalid_csv", "no switch tier columns"),
        ("host,leaf,leaf\nh1,l1,l2\n", "invalid_csv", "tier 'leaf' appears twice"),
        ("host,leaf,,spine\nh1,l1,x,s1\n", "invalid_csv", "empty column name"),
        ("host,leaf,cluster\nh1,l1,c\n", "invalid_csv", "reserved"),
        ("host,leaf,Host\nh1,l1,c\n", "invalid_csv", "reserved"),
        ("host,1leaf\nh1,l1\n", "invalid_csv", "invalid tier name"),
        ("host,leaf\n", "invalid_csv", "no host rows"),
        ("host,gpus,leaf\nh1,8,l1\nh2,0,l1\n", "invalid_csv", r":3: gpus must be a positive"),
        ("host,gpus,leaf\nh1,x,l1\n", "invalid_csv", r":2: gpus must be a positive"),
        ("host,gpus,leaf\nh1,2.5,l1\n", "invalid_csv", r":2: gpus must be a positive"),
        ("host,gpus,leaf\nh1,-8,l1\n", "invalid_csv", r":2: gpus must be a positive"),
        ("host,gpus,leaf\nh1,,l1\n", "invalid_csv", r":2: gpus must be a positive"),
        ("host,leaf,spine\nh1,l1\n", "invalid_csv", r":2: expected 3 columns"),
        ("host,leaf\nh1,l1\nh2,l1,extra\n", "invalid_csv", r":3: expected 2 columns"),
        ("host,leaf,spine\nh1,,s1\n", "invalid_csv", r":2: empty leaf cell"),
        ("host,leaf,spine\nh1,l1,\n", "invalid_csv", r":2: empty spine cell"),
        ("host,leaf\n,l1\n", "invalid_csv", r":2: empty host name"),
        ("host,leaf\nh 1,l1\n", "invalid_csv", r":2: host name 'h 1' contains whitespace"),
        ("host,leaf,spine\nh1,l/1,s1\n", "invalid_csv", r":2: leaf 'l/1' contains '/'"),
        ('host,leaf\nh1,"l1\n', "invalid_csv", "malformed CSV"),
        ("host,leaf\nh1,l1\nh2,l1\nh1,l1\n", "duplicate_name", r":4: host 'h1' listed twice"),
        (
            "host,leaf,spine\nh1,l1,s1\nh1,l1,s2\n",
            "host_multiple_parents",
            r":3: host 'h1' is under two different leaf switches: 's1/l1' \(line 2\) and 's2/l1'",
        ),
    ],
)
def test_invalid_csv(text: str, reason: str, match: str) -> None:
    with pytest.raises(TopologyError, match=match) as excinfo:
        parse_hosts_csv(text, name="t", source="f.csv")
    assert excinfo.value.reason == reason
    assert "\n" not in str(excinfo.value)


def test_host_named_like_a_switch_is_caught_by_the_model() -> None:
    spec = parse_hosts_csv("host,leaf\nl1,l1\n", name="t")
    with pytest.raises(TopologyError, match="both a host and a switch") as excinfo:
        Topology.from_spec(spec)
    assert excinfo.value.reason == "duplicate_name"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read") as excinfo:
        import_hosts_csv(tmp_path / "missing.csv")
    assert excinfo.value.reason == "unreadable_file"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("host,leaf\nh\xe9,l1\n".encode("latin-1"))
    with pytest.raises(TopologyError, match="not UTF-8") as excinfo:
        import_hosts_csv(path)
    assert excinfo.value.reason == "unreadable_file"


def test_empty_topology_name() -> None:
    with pytest.raises(TopologyError, match="name must not be empty") as excinfo:
        parse_hosts_csv("host,leaf\nh1,l1\n", name=" ")
    assert excinfo.value.reason == "invalid_input"
