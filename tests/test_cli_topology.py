"""``firsthopctl topology``: the commands and flags of DESIGN.md, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli.ctl import app
from topology.model import Topology

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _fails(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    out = tmp_path / "small.yaml"
    _ok(
        "topology", "generate", "fat-tree", "--pods", "2", "--leaves-per-pod", "3",
        "--hosts-per-leaf", "4", "--gpus-per-host", "8", "--out", str(out),
    )  # fmt: skip
    return out


def test_generate_writes_a_loadable_file(small: Path) -> None:
    topology = Topology.load(small)
    assert len(topology.hosts) == 24
    assert topology.num_gpus == 192


def test_show_json_summary(small: Path) -> None:
    summary = json.loads(_ok("topology", "show", str(small), "--output", "json"))
    assert summary["gpus"] == 192
    tiers = {t["name"]: t for t in summary["tiers"]}
    assert list(tiers) == ["host", "leaf", "pod", "cluster"]
    assert tiers["leaf"]["domains"] == 6
    assert tiers["pod"]["gpus_max"] == 96
    assert tiers["cluster"]["bandwidth_gbytes_per_s"] == pytest.approx(50 / 7)


def test_show_table_and_tree(small: Path) -> None:
    table = _ok("topology", "show", str(small))
    assert "192 GPUs" in table
    assert "leaf" in table
    tree = _ok("topology", "show", str(small), "--tree", "--depth", "2", "--width", "1")
    assert "... 1 more" in tree  # the second pod is elided
    assert "... 2 more" in tree  # two of three leaves are elided


def test_export_slurm_tree_to_stdout(small: Path) -> None:
    text = _ok("topology", "export-slurm", str(small), "--plugin", "tree")
    lines = [line for line in text.splitlines() if line.startswith("SwitchName=")]
    assert sum("Nodes=" in line for line in lines) == 6
    assert sum("Switches=" in line for line in lines) == 3  # two pods and the root


def test_export_slurm_block_to_file(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "topology.conf"
    _ok("topology", "export-slurm", str(small), "--plugin", "block", "--out", str(out))
    text = out.read_text()
    assert text.count("BlockName=") == 6
    assert "BlockSizes=" in text


def test_import_csv(tmp_path: Path) -> None:
    csv_file = tmp_path / "hosts.csv"
    csv_file.write_text("host,gpus,leaf,spine\nh1,8,l1,s1\nh2,8,l1,s1\nh3,4,l1,s2\n")
    out = tmp_path / "t.json"
    _ok("topology", "import", str(csv_file), "--out", str(out))
    topology = Topology.load(out)
    # l1 under s1 and l1 under s2 are two different leaves.
    assert topology.index.num_domains(1) == 2
    assert topology.hosts["h3"].gpus == 4


def test_malformed_topology_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntiers: []\nswitches: [{name: a, tier: leaf}]\n")
    line = _fails("topology", "show", str(bad))
    assert "unknown tier 'leaf'" in line


def test_malformed_csv(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("host,gpus,leaf\nh1,zero,l1\n")
    line = _fails("topology", "import", str(bad), "--out", str(tmp_path / "x.yaml"))
    assert "gpus" in line
    assert not (tmp_path / "x.yaml").exists()


def test_missing_file(tmp_path: Path) -> None:
    line = _fails("topology", "show", str(tmp_path / "nope.yaml"))
    assert "unreadable_file" in line


def test_bad_generator_arguments(tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    line = _fails(
        "topology", "generate", "fat-tree", "--pods", "0", "--leaves-per-pod", "1",
        "--hosts-per-leaf", "1", "--out", str(out),
    )  # fmt: skip
    assert "pods" in line
    assert not out.exists()
