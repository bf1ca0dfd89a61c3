"""Packaging smoke tests: our packages come from this repository, console scripts start, and a
topology message built by hand (as another tool would) reads as the topology it describes."""

import importlib
import importlib.metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from firsthop.v1 import topology_pb2
from scheduler.api.topology_serde import topology_from_proto, topology_to_proto

REPO = Path(__file__).resolve().parents[1]

# PyPI has unrelated distributions named like several of these; they must never shadow ours.
OUR_MODULES = [
    "topology",
    "placement",
    "scheduler",
    "agents",
    "firsthop",
    "firsthop.v1",
    "firsthop.v1.topology_pb2",
]

CONSOLE_SCRIPTS = {
    "firsthop": "scheduler.cli.user:main",
    "firsthopctl": "scheduler.cli.ctl:main",
    "firsthop-scheduler": "scheduler.cli.server:main",
    "firsthop-agent": "agents.cli:main",
    "firsthop-slurm": "agents.slurm.cli:entry",
    "firsthop-sim": "scheduler.sim.cli:main",
}
# Slurm runs these hooks once per job, node or task: argparse, not Typer, to start fast.
ARGPARSE_SCRIPTS = {"firsthop-slurm"}


@pytest.mark.parametrize("name", OUR_MODULES)
def test_package_is_imported_from_this_repository(name: str) -> None:
    module = importlib.import_module(name)

    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO)


def test_declared_console_scripts_are_the_expected_ones() -> None:
    scripts = {
        ep.name: ep.value
        for ep in importlib.metadata.distribution("firsthop").entry_points
        if ep.group == "console_scripts"
    }

    assert scripts == CONSOLE_SCRIPTS


@pytest.mark.parametrize(
    ("script", "target"),
    sorted((k, v) for k, v in CONSOLE_SCRIPTS.items() if k not in ARGPARSE_SCRIPTS),
)
def test_console_script_help_exits_zero(script: str, target: str) -> None:
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    app = module.app
    assert isinstance(app, typer.Typer)
    assert callable(getattr(module, func_name))

    result = CliRunner().invoke(app, ["--help"], prog_name=script)

    assert result.exit_code == 0, result.output
    assert f"Usage: {script}" in result.output


def test_firsthopctl_has_topology_group() -> None:
    from scheduler.cli.ctl import app

    result = CliRunner().invoke(app, ["topology", "--help"], prog_name="firsthopctl")

    assert result.exit_code == 0, result.output
    assert "Generate, import, show and export cluster topologies" in result.output


def _example_topology() -> topology_pb2.Topology:
    nvlink = topology_pb2.Tier(
        name="nvlink", level=0, bandwidth_gbytes_per_s=450.0, latency_us=0.5, nvlink=True
    )
    leaf = topology_pb2.Tier(
        name="leaf", level=1, bandwidth_gbytes_per_s=50.0, oversubscription=1.0, rails=2
    )
    spine = topology_pb2.Tier(
        name="spine", level=2, bandwidth_gbytes_per_s=50.0, oversubscription=7.0
    )
    domains = [
        topology_pb2.Domain(name="s1", tier="spine", children=["s1/l01", "s1/l02"]),
        topology_pb2.Domain(name="s1/l01", tier="leaf", parent="s1", hosts=["h0001"]),
        topology_pb2.Domain(name="s1/l02", tier="leaf", parent="s1", hosts=["h0002"]),
    ]
    hosts = [
        topology_pb2.Host(
            name="h0001",
            gpu_count=2,
            gpus=[
                topology_pb2.Gpu(index=0, rail=0, pci_bus_id="0000:18:00.0"),
                topology_pb2.Gpu(index=1, rail=1),
            ],
            parent="s1/l01",
        ),
        topology_pb2.Host(name="h0002", gpu_count=2, parent="s1/l02", nvlink_domain="rack1"),
    ]
    return topology_pb2.Topology(
        name="two-leaves",
        tiers=[leaf, spine],
        host_fabric=nvlink,
        domains=domains,
        hosts=hosts,
    )


def test_a_hand_built_topology_message_reads_with_the_documented_defaults() -> None:
    data = _example_topology().SerializeToString()

    topology = topology_from_proto(topology_pb2.Topology.FromString(data))

    assert topology.name == "two-leaves"
    assert [t.name for t in topology.tiers] == ["leaf", "spine"]
    leaf, spine = topology.tiers
    # Unset optional fields read as their documented defaults.
    assert (leaf.latency_us, leaf.oversubscription, leaf.rails) == (0.0, 1.0, 2)
    assert (spine.latency_us, spine.oversubscription, spine.rails) == (0.0, 7.0, None)
    assert topology.host_fabric.nvlink
    assert {name: host.gpus for name, host in topology.hosts.items()} == {"h0001": 2, "h0002": 2}
    assert topology.location("h0002") == ("s1/l02", "s1")
    # nvlink_domain is derived output, ignored on input: it creates no domain.
    assert "rack1" not in topology.domains
    assert topology_from_proto(topology_to_proto(topology)).domains == topology.domains


@pytest.mark.parametrize("script", sorted(ARGPARSE_SCRIPTS))
def test_argparse_script_help_exits_zero(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    module_name, _, _ = CONSOLE_SCRIPTS[script].partition(":")
    main = importlib.import_module(module_name).main
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert f"usage: {script}" in capsys.readouterr().out
