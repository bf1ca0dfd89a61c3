"""Independent reference definitions the placement tests check the engine against."""

from __future__ import annotations

import itertools

from placement import Dim, Parallelism


def coordinates(par: Parallelism, rank: int) -> dict[Dim, int]:
    """Coordinates of ``rank``: leftmost dimension of the normalised order fastest."""
    out: dict[Dim, int] = {}
    rest = rank
    for dim in par.innermost_first:
        size = par.sizes[dim]
        out[dim] = rest % size
        rest //= size
    return out


def megatron_groups(par: Parallelism, dim: Dim) -> list[list[int]]:
    """Groups of ``dim`` as sorted rank lists: ranks equal in every other coordinate."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for rank in range(par.world_size):
        c = coordinates(par, rank)
        key = tuple(c[d] for d in par.innermost_first if d != dim)
        groups.setdefault(key, []).append(rank)
    return sorted(sorted(g) for g in groups.values())


def group_span(ancestors: list[list[int]], hosts: list[int]) -> int:
    """Lowest level whose one domain holds every host (``ancestors[h][level]``)."""
    for level in itertools.count():
        if len({ancestors[h][level] for h in hosts}) == 1:
            return level
    raise AssertionError("unreachable")  # pragma: no cover
