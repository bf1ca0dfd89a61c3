"""Generators for common GPU cluster fabrics (fat-tree, rail-optimized, dual-plane).

Each generator is a pure function returning a :class:`~topology.spec.TopologySpec` (it writes
no file) and validates its arguments, raising
:class:`~topology.errors.TopologyError` with reason ``invalid_generator_args``.
:data:`GENERATORS` maps the CLI names to them.

Must not import grpc, generated protos, databases, subprocess, ``placement``, ``scheduler`` or
``agents``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from topology.generators.dual_plane import dual_plane
from topology.generators.fat_tree import fat_tree
from topology.generators.rail_optimized import rail_optimized
from topology.spec import TopologySpec

Generator = Callable[..., TopologySpec]

GENERATORS: Mapping[str, Generator] = MappingProxyType(
    {
        "fat-tree": fat_tree,
        "rail-optimized": rail_optimized,
        "dual-plane": dual_plane,
    }
)
"""CLI name -> generator function (read-only)."""

__all__ = ["GENERATORS", "Generator", "dual_plane", "fat_tree", "rail_optimized"]
