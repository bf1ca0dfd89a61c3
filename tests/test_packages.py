"""Packaging smoke tests: our packages come from this repository, console scripts start, and the
topology wire messages round-trip."""

import importlib
import importlib.metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from firsthop.v1 import topology_pb2

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
    "firsthop-sim": "scheduler.sim.cli:main",
}


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


@pytest.mark.parametrize(("script", "target"), sorted(CONSOLE_SCRIPTS.items()))
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


def test_topology_message_round_trips() -> None:
    original = _example_topology()

    parsed = topology_pb2.Topology()
    parsed.ParseFromString(original.SerializeToString())

    assert parsed == original
    assert parsed.hosts[0].gpus[0].HasField("pci_bus_id")
    assert not parsed.hosts[0].gpus[1].HasField("pci_bus_id")
    assert not parsed.domains[0].HasField("parent")
    assert not parsed.hosts[0].HasField("nvlink_domain")
    assert parsed.hosts[1].nvlink_domain == "rack1"
    assert not parsed.tiers[1].HasField("latency_us")
