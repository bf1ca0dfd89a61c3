"""Shared building blocks of the fabric generators: argument checks and the tree layout.

Every generator describes its fabric as a list of :class:`Level` (switch tiers, farthest
first, each with a fan-out per parent) plus a number of hosts per lowest switch, and
:func:`build_spec` lays it out: switches in depth-first pre-order, hosts numbered globally in
depth-first order (``h0001``...), so the model's host order matches the names and Slurm
hostlists compress to one range per switch.

Must not import grpc, generated protos, databases, subprocess, ``placement``, ``scheduler`` or
``agents``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from topology.errors import TopologyError
from topology.spec import SwitchSpec, TopologySpec
from topology.tiers import NVLINK_H100, TierSpec

INVALID_ARGS = "invalid_generator_args"
"""Stable reason of every generator argument error."""

MAX_HOSTS = 1 << 20
"""Largest cluster a generator builds (a guard against typos such as an extra zero)."""

HOST_PREFIX = "h"
MIN_HOST_DIGITS = 4
MIN_SWITCH_DIGITS = 2


@dataclass(frozen=True, slots=True)
class Level:
    """One switch level of a generated fabric.

    Attributes:
        tier: the tier name the switches of this level belong to.
        label: the name fragment of its switches (``pod`` gives ``pod00``).
        count: switches per parent switch (or in the cluster, for the top level).
    """

    tier: str
    label: str
    count: int


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer of at least ``minimum``.

    Raises:
        TopologyError: ``invalid_generator_args`` for anything else (bools included).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{name} must be an integer, got {value!r}", reason=INVALID_ARGS)
    if value < minimum:
        raise TopologyError(f"{name} must be at least {minimum}, got {value}", reason=INVALID_ARGS)
    return value


def check_ratio(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number of at least 1 (a ratio ``x:1``).

    Raises:
        TopologyError: ``invalid_generator_args`` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TopologyError(f"{name} must be a number, got {value!r}", reason=INVALID_ARGS)
    ratio = float(value)
    if not math.isfinite(ratio) or ratio < 1.0:
        raise TopologyError(
            f"{name} must be a finite ratio of at least 1 (x:1), got {value!r}",
            reason=INVALID_ARGS,
        )
    return ratio


def check_name(name: object, default: str) -> str:
    """The topology name: ``default`` when ``name`` is None, else a non-blank string.

    Raises:
        TopologyError: ``invalid_generator_args`` for a blank or non-string name.
    """
    if name is None:
        return default
    if not isinstance(name, str) or not name.strip():
        raise TopologyError(f"name must be a non-empty string, got {name!r}", reason=INVALID_ARGS)
    return name


def tier_with(tier: TierSpec, **updates: object) -> TierSpec:
    """A validated copy of ``tier`` with some fields replaced."""
    return TierSpec.model_validate({**tier.model_dump(), **updates})


def switch_width(count: int) -> int:
    """Digits of the zero-padded index of ``count`` sibling switches (indices start at 0)."""
    return max(MIN_SWITCH_DIGITS, len(str(count - 1)))


def host_width(total: int) -> int:
    """Digits of the zero-padded global host number (numbers start at 1)."""
    return max(MIN_HOST_DIGITS, len(str(total)))


def build_spec(
    *,
    name: str,
    levels: Sequence[Level],
    hosts_per_switch: int,
    tiers: Sequence[TierSpec],
    gpus_per_host: int,
    host_fabric: TierSpec = NVLINK_H100,
) -> TopologySpec:
    """Lay out a uniform tree and return its spec.

    Args:
        name: the topology name.
        levels: switch levels, farthest from the hosts first.
        hosts_per_switch: hosts under each switch of the last level.
        tiers: the tier specs, nearest first (the spec's order).
        gpus_per_host: GPUs of every host.
        host_fabric: the intra-host fabric.

    Raises:
        TopologyError: ``invalid_generator_args`` when the cluster exceeds :data:`MAX_HOSTS`.
    """
    total = hosts_per_switch
    for level in levels:
        total *= level.count
    if total > MAX_HOSTS:
        raise TopologyError(
            f"{total:,} hosts requested; generators build at most {MAX_HOSTS:,}",
            reason=INVALID_ARGS,
        )
    widths = [switch_width(level.count) for level in levels]
    digits = host_width(total)
    switches: list[SwitchSpec] = []
    next_host = 1

    def visit(depth: int, parent: str | None) -> None:
        nonlocal next_host
        level = levels[depth]
        last = depth == len(levels) - 1
        for i in range(level.count):
            fragment = f"{level.label}{i:0{widths[depth]}d}"
            switch = fragment if parent is None else f"{parent}-{fragment}"
            if last:
                hosts = tuple(
                    f"{HOST_PREFIX}{n:0{digits}d}"
                    for n in range(next_host, next_host + hosts_per_switch)
                )
                next_host += hosts_per_switch
                switches.append(
                    SwitchSpec(name=switch, tier=level.tier, parent=parent, hosts=hosts)
                )
            else:
                switches.append(SwitchSpec(name=switch, tier=level.tier, parent=parent))
                visit(depth + 1, switch)

    visit(0, None)
    return TopologySpec(
        name=name,
        gpus_per_host=gpus_per_host,
        host_fabric=host_fabric,
        tiers=tuple(tiers),
        switches=tuple(switches),
    )
