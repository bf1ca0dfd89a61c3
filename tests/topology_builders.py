"""Small topology builders shared by tests (plain specs, no generators)."""

from __future__ import annotations

from topology.spec import HostSpec, SwitchSpec, TopologySpec
from topology.tiers import LEAF_400G, POD_SPINE


def two_level(
    pods: int = 2, leaves: int = 2, hosts: int = 4, gpus: int = 8, name: str = "t"
) -> TopologySpec:
    """A pods x leaves x hosts fat tree with hosts named ``h001``... in depth-first order."""
    switches: list[SwitchSpec] = []
    n = 0
    for p in range(pods):
        switches.append(SwitchSpec(name=f"p{p}", tier="pod"))
        for leaf in range(leaves):
            names = tuple(f"h{n + i + 1:03d}" for i in range(hosts))
            n += hosts
            switches.append(
                SwitchSpec(name=f"p{p}l{leaf}", tier="leaf", parent=f"p{p}", hosts=names)
            )
    return TopologySpec(
        name=name, gpus_per_host=gpus, tiers=(LEAF_400G, POD_SPINE), switches=tuple(switches)
    )


def with_switches(spec: TopologySpec, *switches: SwitchSpec) -> TopologySpec:
    """``spec`` with ``switches`` appended."""
    return spec.model_copy(update={"switches": (*spec.switches, *switches)})


__all__ = ["HostSpec", "SwitchSpec", "TopologySpec", "two_level", "with_switches"]
