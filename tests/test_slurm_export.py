"""Slurm export: hostlists, topology/tree and topology/block files, golden files.

Golden files live in tests/golden/; regenerate them with FIRSTHOP_UPDATE_GOLDEN=1 after an
intended change to the output, and review the diff.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology.csv_import import import_hosts_csv, parse_hosts_csv
from topology.errors import TopologyError
from topology.generators import fat_tree, rail_optimized
from topology.model import Topology
from topology.slurm import (
    compress_hostlist,
    expand_hostlist,
    export_block,
    export_topology_conf,
    export_tree,
    slurm_name,
)
from topology.spec import SwitchSpec, TopologySpec
from topology.tiers import LEAF_400G, POD_SPINE

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLE = ROOT / "examples" / "hosts.csv"
LINGJUN = ROOT / "data" / "topology" / "crux_lingjun_2023_topo.csv"
UPDATE_GOLDEN = os.environ.get("FIRSTHOP_UPDATE_GOLDEN") == "1"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def lingjun() -> Topology:
    with LINGJUN.open(newline="", encoding="utf-8") as src:
        rows = list(csv.reader(src))
    lines = ["host,ASW,PSW,DSW", *(f"{ip},{asw},{psw},{dsw}" for ip, dsw, psw, asw in rows[1:])]
    return Topology.from_spec(parse_hosts_csv("\n".join(lines), name="lingjun"))


def parse_tree(text: str) -> dict[str, tuple[str, list[str]]]:
    """``SwitchName`` -> (``Nodes`` or ``Switches``, expanded names); checks the syntax."""
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = dict(token.split("=", 1) for token in line.split())
        name = fields.pop("SwitchName")
        assert SAFE_NAME.match(name), name
        assert name not in out, f"duplicate switch {name}"
        ((key, value),) = fields.items()
        assert key in {"Nodes", "Switches"}
        out[name] = (key, expand_hostlist(value))
    return out


def hosts_by_root(switches: dict[str, tuple[str, list[str]]]) -> tuple[str, list[str]]:
    """The single root switch and every host reachable from it (each exactly once)."""
    children = {c for key, names in switches.values() if key == "Switches" for c in names}
    roots = [name for name in switches if name not in children]
    assert len(roots) == 1, roots

    def walk(name: str) -> list[str]:
        key, names = switches[name]
        if key == "Nodes":
            return list(names)
        return [h for child in names for h in walk(child)]

    return roots[0], walk(roots[0])


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path}; rerun with FIRSTHOP_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- hostlists


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([f"h{i:04d}" for i in range(1, 33)], "h[0001-0032]"),
        (["h0001", "h0002", "h0003", "h0004", "h0007"], "h[0001-0004,0007]"),
        (["h0007", "h0003", "h0001", "h0002", "h0004", "h0003"], "h[0001-0004,0007]"),
        (["a1", "b1", "a2"], "a[1-2],b1"),
        (["login", "h1", "login"], "login,h1"),
        (["h9", "h10", "h11"], "h[9-11]"),
        (["h08", "h09", "h10"], "h[08-10]"),
        (["h1", "h01", "h2", "h02"], "h[1-2,01-02]"),
        (["h0001"], "h0001"),
        (["rack1-n07", "rack1-n08", "rack2-n07"], "rack1-n[07-08],rack2-n07"),
        (["123", "124"], "123,124"),
        (["x" + "9" * 19, "x" + "9" * 18], "x" + "9" * 19 + ",x" + "9" * 18),
        ([], ""),
    ],
)
def test_compress_hostlist(names: list[str], expected: str) -> None:
    assert compress_hostlist(names) == expected
    assert sorted(expand_hostlist(expected)) == sorted(set(names))


def test_compress_splits_ranges_slurm_would_reject() -> None:
    names = [f"n{i:06d}" for i in range(70_000)]
    assert compress_hostlist(names) == "n[000000-065535,065536-069999]"


@pytest.mark.parametrize("bad", ["", "a,b", "h[1]", "h]"])
def test_compress_rejects_unwritable_names(bad: str) -> None:
    with pytest.raises(TopologyError, match="cannot appear in a hostlist") as excinfo:
        compress_hostlist(["h1", bad])
    assert excinfo.value.reason == "invalid_hostlist"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("h[1-3]", ["h1", "h2", "h3"]),
        ("tux[0-1,12],login", ["tux0", "tux1", "tux12", "login"]),
        ("h[9-11]-ib", ["h9-ib", "h10-ib", "h11-ib"]),
        ("  ", []),
    ],
)
def test_expand_hostlist(expression: str, expected: list[str]) -> None:
    assert expand_hostlist(expression) == expected


@pytest.mark.parametrize(
    "bad", ["h[1-", "h1]", "h[3-1]", "h[a]", "h[1-2", "a,,b", "h[]", "h[1][2]"]
)
def test_expand_rejects_malformed(bad: str) -> None:
    with pytest.raises(TopologyError) as excinfo:
        expand_hostlist(bad)
    assert excinfo.value.reason == "invalid_hostlist"


_PREFIX = st.text(alphabet="abz-_.", min_size=0, max_size=3)
_NAME = st.one_of(
    st.builds(lambda p, n, w: f"x{p}{n:0{w}d}", _PREFIX, st.integers(0, 120), st.integers(1, 4)),
    st.builds(lambda p: f"y{p}", _PREFIX),
    st.builds(lambda p, d: f"z{p}{d}", _PREFIX, st.text(alphabet="0123456789", max_size=3)),
)


@given(st.lists(_NAME, max_size=40))
def test_expand_inverts_compress(names: list[str]) -> None:
    compressed = compress_hostlist(names)
    expanded = expand_hostlist(compressed)
    assert sorted(expanded) == sorted(set(names))
    assert len(expanded) == len(set(names))
    assert compress_hostlist(expanded) == compressed


# ---------------------------------------------------------------- names


def test_slurm_name_sanitises_and_truncates() -> None:
    assert slurm_name("G6/P10/S14") == "G6_P10_S14"
    assert slurm_name("a.b c") == "a_b_c"
    assert slurm_name("pod00-leaf00") == "pod00-leaf00"
    long = slurm_name("x" * 100)
    assert len(long) == 64
    assert SAFE_NAME.match(long)
    assert long == slurm_name("x" * 100)
    assert long != slurm_name("x" * 101)


def test_colliding_names_stay_unique() -> None:
    text = "host,leaf,spine\nh1,a.b,s\nh2,a_b,s\nh3,c,s2\n"
    topo = Topology.from_spec(parse_hosts_csv(text, name="s"))
    switches = parse_tree(export_tree(topo))
    assert switches["s_a_b"] == ("Nodes", ["h1"])
    assert switches["s_a_b_2"] == ("Nodes", ["h2"])
    assert switches["s"] == ("Switches", ["s_a_b", "s_a_b_2"])
    assert switches["s_2"] == ("Switches", ["s", "s2"])  # the root, named after "s"


# ---------------------------------------------------------------- golden files


GOLDEN_CASES: dict[str, Callable[[], str]] = {
    "fat_tree_2x2x4.tree.conf": lambda: export_tree(Topology.from_spec(fat_tree(2, 2, 4))),
    "fat_tree_2x2x4.block.conf": lambda: export_block(Topology.from_spec(fat_tree(2, 2, 4))),
    "rail_optimized_2x2x4.tree.conf": lambda: export_tree(
        Topology.from_spec(rail_optimized(2, 2, 4))
    ),
    "rail_optimized_2x2x4.block.conf": lambda: export_block(
        Topology.from_spec(rail_optimized(2, 2, 4))
    ),
    "example_hosts_csv.tree.conf": lambda: export_tree(
        Topology.from_spec(import_hosts_csv(EXAMPLE))
    ),
    "example_hosts_csv.block.conf": lambda: export_block(
        Topology.from_spec(import_hosts_csv(EXAMPLE))
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str) -> None:
    check_golden(name, GOLDEN_CASES[name]())


# ---------------------------------------------------------------- tree


def test_tree_lingjun_has_one_line_per_switch() -> None:
    topo = lingjun()
    text = export_tree(topo)
    switches = parse_tree(text)
    leaves = {n for n, (key, _) in switches.items() if key == "Nodes"}
    assert len(leaves) == 119
    assert len(switches) == 119 + 3 + 1  # ToRs, PSWs, and the single DSW as root
    assert sum(line.startswith("SwitchName=") for line in text.splitlines()) == 123
    assert switches["G6"] == ("Switches", ["G6_P8", "G6_P10", "G6_P12"])
    root, hosts = hosts_by_root(switches)
    assert root == "G6"
    assert sorted(hosts) == sorted(topo.hosts)
    for domain in topo.domains_at(1):
        assert switches[slurm_name(domain.name)] == ("Nodes", list(domain.hosts))


@pytest.mark.parametrize(
    ("spec", "root"),
    [
        (fat_tree(1, 3, 2), "pod00"),
        (fat_tree(3, 2, 2), "fat-tree-3x2x2"),
        (fat_tree(2, 1, 36, 4, nvlink_rack_hosts=18), "fat-tree-2x1x36"),
        (rail_optimized(1, 2, 3), "pod00"),
    ],
)
def test_tree_reaches_every_host_once_from_one_root(spec: TopologySpec, root: str) -> None:
    topo = Topology.from_spec(spec)
    switches = parse_tree(export_tree(topo))
    found, hosts = hosts_by_root(switches)
    assert found == root
    assert hosts == list(topo.hosts)
    assert len(switches) == len(topo.domains) + (root not in topo.domains)


def test_tree_root_is_named_after_the_topology_and_kept_unique() -> None:
    topo = Topology.from_spec(fat_tree(2, 1, 1, name="pod00"))
    switches = parse_tree(export_tree(topo))
    assert switches["pod00_2"] == ("Switches", ["pod00", "pod01"])


def mixed_depth() -> Topology:
    """Leaves optional: pod0 has a leaf and direct hosts, pod1 only direct hosts."""
    spec = TopologySpec(
        name="mixed",
        tiers=(LEAF_400G.model_copy(update={"optional": True}), POD_SPINE),
        switches=(
            SwitchSpec(name="pod0", tier="pod", hosts=("h5", "h6")),
            SwitchSpec(name="l0", tier="leaf", parent="pod0", hosts=("h1", "h2")),
            SwitchSpec(name="pod1", tier="pod", hosts=("h7",)),
        ),
    )
    return Topology.from_spec(spec)


def test_tree_omits_virtual_domains_and_splits_direct_hosts() -> None:
    topo = mixed_depth()
    assert any(d.virtual for d in topo.domains.values())
    text = export_tree(topo)
    assert "~" not in text
    switches = parse_tree(text)
    assert switches == {
        "pod0_nodes": ("Nodes", ["h5", "h6"]),
        "l0": ("Nodes", ["h1", "h2"]),
        "pod0": ("Switches", ["l0", "pod0_nodes"]),
        "pod1": ("Nodes", ["h7"]),
        "mixed": ("Switches", ["pod0", "pod1"]),
    }
    assert "LinkSpeed=" not in text


def test_tree_hosts_under_the_cluster_root() -> None:
    spec = TopologySpec(
        name="flat",
        tiers=(LEAF_400G.model_copy(update={"optional": True}),),
        switches=(SwitchSpec(name="l0", tier="leaf", hosts=("a1", "a2")),),
        hosts=("b1", "b2"),
    )
    switches = parse_tree(export_tree(Topology.from_spec(spec)))
    assert switches == {
        "l0": ("Nodes", ["a1", "a2"]),
        "flat_nodes": ("Nodes", ["b1", "b2"]),
        "flat": ("Switches", ["l0", "flat_nodes"]),
    }


def test_tree_skips_switches_without_hosts() -> None:
    spec = fat_tree(2, 1, 2)
    empty = SwitchSpec(name="pod09", tier="pod")
    spec = spec.model_copy(update={"switches": (*spec.switches, empty)})
    switches = parse_tree(export_tree(Topology.from_spec(spec)))
    assert "pod09" not in switches
    assert switches["fat-tree-2x1x2"] == ("Switches", ["pod00", "pod01"])


def test_unwritable_host_name() -> None:
    topo = Topology.from_spec(parse_hosts_csv("host,leaf\nh=1,l1\n", name="t"))
    for export in (export_tree, export_block):
        with pytest.raises(TopologyError, match="cannot be written") as excinfo:
            export(topo)
        assert excinfo.value.reason == "invalid_host_name"


# ---------------------------------------------------------------- block


def block_lines(text: str) -> tuple[dict[str, list[str]], list[int]]:
    blocks: dict[str, list[str]] = {}
    sizes: list[int] = []
    for line in text.splitlines():
        if line.startswith("BlockName="):
            name_field, nodes_field = line.split()
            name = name_field.removeprefix("BlockName=")
            assert SAFE_NAME.match(name)
            blocks[name] = expand_hostlist(nodes_field.removeprefix("Nodes="))
        elif line.startswith("BlockSizes="):
            sizes = [int(v) for v in line.removeprefix("BlockSizes=").split(",")]
        else:
            assert line.startswith("#"), line
    return blocks, sizes


def test_block_sizes_stay_inside_a_pod() -> None:
    blocks, sizes = block_lines(export_block(Topology.from_spec(fat_tree(24, 16, 32))))
    assert len(blocks) == 384
    assert sizes == [32, 64, 128, 256, 512]
    assert blocks["pod23-leaf15"] == [f"h{i:05d}" for i in range(12257, 12289)]


def test_block_sizes_with_an_odd_pod() -> None:
    blocks, sizes = block_lines(export_block(Topology.from_spec(fat_tree(3, 6, 2))))
    assert len(blocks) == 18
    assert sizes == [2, 4]


def test_block_tier_choice_and_single_parent() -> None:
    topo = Topology.from_spec(fat_tree(5, 2, 4))
    blocks, sizes = block_lines(export_block(topo, block_tier="pod"))
    assert list(blocks) == [f"pod{i:02d}" for i in range(5)]
    assert sizes == [8, 16, 32]


def test_block_nvl72_racks_are_the_default_base_blocks() -> None:
    topo = Topology.from_spec(fat_tree(1, 2, 36, 4, nvlink_rack_hosts=18))
    blocks, sizes = block_lines(export_topology_conf(topo, "block"))
    assert list(blocks) == [
        "pod00-leaf00-rack00",
        "pod00-leaf00-rack01",
        "pod00-leaf01-rack00",
        "pod00-leaf01-rack01",
    ]
    assert sizes == [18, 36]


def test_block_lingjun_unequal_blocks() -> None:
    topo = lingjun()
    text = export_block(topo)
    blocks, sizes = block_lines(text)
    assert len(blocks) == 119
    assert sorted(h for hosts in blocks.values() for h in hosts) == sorted(topo.hosts)
    # ToRs hold 2..8 hosts; PSWs hold 48, 42 and 29 ToRs, so pairs are the largest
    # aggregate that never straddles two PSWs.
    assert sizes == [2, 4]
    assert "Blocks differ in size" in text


def test_block_includes_hosts_of_skipped_tiers() -> None:
    blocks, _ = block_lines(export_block(mixed_depth()))
    assert sorted(h for hosts in blocks.values() for h in hosts) == ["h1", "h2", "h5", "h6", "h7"]


def test_explicit_block_sizes() -> None:
    topo = Topology.from_spec(fat_tree(2, 4, 4))
    _, sizes = block_lines(export_block(topo, block_sizes=[4, 16]))
    assert sizes == [4, 16]
    _, sizes = block_lines(export_block(topo, block_sizes=[2, 4]))
    assert sizes == [2, 4]


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ([], "must not be empty"),
        ([0], "positive integers"),
        ([5], "exceeds the smallest block"),
        ([4, 12], "power of two"),
        ([4, 4], "power of two"),
        ([4, 8, 8], "power of two"),
        ([4, 4 << 16], "power of two"),
    ],
)
def test_invalid_block_sizes(sizes: list[int], match: str) -> None:
    topo = Topology.from_spec(fat_tree(2, 4, 4))
    with pytest.raises(TopologyError, match=match) as excinfo:
        export_block(topo, block_sizes=sizes)
    assert excinfo.value.reason == "invalid_block_sizes"


@pytest.mark.parametrize("tier", ["host", "cluster", "spine"])
def test_invalid_block_tier(tier: str) -> None:
    with pytest.raises(TopologyError, match="is not a switch tier") as excinfo:
        export_block(Topology.from_spec(fat_tree(1, 1, 1)), block_tier=tier)
    assert excinfo.value.reason == "unknown_tier"


def test_export_dispatch_errors() -> None:
    topo = Topology.from_spec(fat_tree(1, 1, 1))
    with pytest.raises(TopologyError, match="unknown Slurm topology plugin") as excinfo:
        export_topology_conf(topo, "ring")
    assert excinfo.value.reason == "invalid_input"
    with pytest.raises(TopologyError, match="block plugin only") as excinfo:
        export_topology_conf(topo, "tree", block_tier="leaf")
    assert excinfo.value.reason == "invalid_input"
    assert export_topology_conf(topo) == export_tree(topo)
