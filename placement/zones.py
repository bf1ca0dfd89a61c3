"""Zone repair: re-split a parent's hosts among its children so partial blocks pair up.

The count models maximise whole blocks kept inside children (``floor(x/B)``) but cannot see
whether the remainders ``x mod B`` can be laid end to end into complete blocks; when they
cannot, the fill order shifts later children off the block grid and splits more blocks than
the model counted. This repair, for the top-most parent with several children, keeps each
child's whole blocks ``q_c`` and re-chooses the remainders so that every split block is one
*zone* of exactly ``B`` hosts: the tail of one child (after its whole blocks), any number of
children with no whole block, and the head of another child (before its whole blocks). In the
fill order ``[aligned children] [A blocks | A tail] [small children] [B head | B blocks] ...``
every whole block stays on the block grid, so the split count equals the model's.

Greedy: the tail is the child with the most spare room (``F_c - B*q_c``), the head the child
with the least spare room that still completes the zone, small children fill any gap. It is a
heuristic; the engine keeps the result only when the verifier finds it cheaper.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from placement.counts import CountProblem, CountTables, allocation_below, parents_of
from topology.index import IntArray


@dataclass(frozen=True, slots=True)
class Zoned:
    """Repaired counts per level and the forced child order of the repaired parent."""

    counts: dict[int, IntArray]
    forced: dict[tuple[int, int], list[int]]


def _pivot(problem: CountProblem, counts: Mapping[int, IntArray]) -> tuple[int, int] | None:
    """The highest parent (level, id) whose hosts come from two or more children."""
    index = problem.index
    level, domain = problem.top, 0
    while level > 1:
        parent = parents_of(index, level - 1)
        used = np.flatnonzero((counts[level - 1] > 0) & (parent == domain))
        if used.size >= 2:
            return level, domain
        if used.size == 0:
            return None
        level, domain = level - 1, int(used[0])
    return None


def zone_repair(
    problem: CountProblem, tables: CountTables, counts: Mapping[int, IntArray]
) -> Zoned | None:
    """Repaired counts and order (see the module docstring), or ``None`` when not applicable."""
    found = _pivot(problem, counts)
    if found is None:
        return None
    level, domain = found
    child_level = level - 1
    if problem.multiple[child_level] != 1:
        return None
    rewarded = [b for b in problem.blocks if b.reward_ns[child_level] > 0]
    if not rewarded:
        return None
    block = max(rewarded, key=lambda b: b.reward_ns[child_level]).hosts
    total = int(counts[level][domain])
    if total % block:
        return None
    index = problem.index
    kids = np.flatnonzero(
        (parents_of(index, child_level) == domain) & (problem.free[child_level] > 0)
    )
    free = {int(c): int(problem.free[child_level][c]) for c in kids}
    whole = {c: int(counts[child_level][c]) // block for c in free}
    zones_needed = total // block - sum(whole.values())
    if zones_needed <= 0:
        return None
    spare = {c: free[c] - block * whole[c] for c in free}
    big = sorted((c for c in free if whole[c] > 0), key=lambda c: (-spare[c], c))
    small = sorted((c for c in free if whole[c] == 0), key=lambda c: (-free[c], c))
    piece = dict.fromkeys(free, 0)
    order_zones: list[int] = []
    used_big: set[int] = set()
    for _ in range(zones_needed):
        zone: list[int] = []
        need = block
        tails = [c for c in big if c not in used_big and spare[c] > 0]
        if tails:
            tail = tails[0]
            piece[tail] = min(spare[tail], need - 1)
            need -= piece[tail]
            used_big.add(tail)
            zone.append(tail)
        heads = sorted(
            (c for c in big if c not in used_big and spare[c] >= need), key=lambda c: (spare[c], c)
        )
        middle: list[int] = []
        if not heads:
            for c in small:
                if need == 0:
                    break
                if piece[c] or free[c] == 0:
                    continue
                piece[c] = min(free[c], need)
                need -= piece[c]
                middle.append(c)
            heads = sorted(
                (c for c in big if c not in used_big and spare[c] >= need > 0),
                key=lambda c: (spare[c], c),
            )
        zone += middle
        if need > 0:
            if not heads:
                return None
            head = heads[0]
            piece[head] = need
            used_big.add(head)
            zone.append(head)
        order_zones += zone
    new = np.zeros_like(counts[child_level])
    for c in free:
        new[c] = block * whole[c] + piece[c]
    if int(new.sum()) != total:
        return None
    aligned = [c for c in sorted(free) if whole[c] > 0 and piece[c] == 0]
    # Every host of the job sits under the pivot, so re-splitting it from the child level
    # down replaces the whole lower allocation.
    repaired = dict(counts)
    repaired.update(allocation_below(tables, child_level, new))
    return Zoned(repaired, {(level, domain): aligned + order_zones})
