"""An exact relaxation of one level of the lower bound: lines kept inside domains.

At level ``l`` the cost pays, for every group not contained in one domain of level ``l-1``,
its step ``C'_d(l) - C'_d(l-1)`` (:mod:`placement.bound`). In a regular layout the host slots
form a box ``n_1 x ... x n_k`` (one axis per slot digit) and the groups of digit ``i`` live on
its axis-parallel *lines*; a line is contained when all its slots sit in one domain. So

    U_l >= W - max over assignments of sum_D (weight of the lines wholly inside D),

with ``W`` the weight of all lines. Relax the assignment to "any ``k_D <= F_D`` slots in each
domain ``D``, ``sum k_D = H``": the contained weight of domain ``D`` is at most ``v(k_D)``,
the most line weight any ``k_D`` cells of the box can hold, and

    U_l >= W - max { sum_D v(k_D) : sum_D k_D = H, 0 <= k_D <= F_D }        (a knapsack).

This is a valid bound for every placement whatever the fill order or layout, and it is exact
for the relaxation: unlike the pairwise bound it weighs all digits of one domain together, so
three dimensions that cannot all stay inside a domain (CP, DP and PP of one job) are seen at
once.

**Computing v.** *Compression* (push every cell of each line to the low end of its axis)
never loses a full line on any axis: for two axes ``i, j`` the full ``j``-lines of a slice
number at most the shortest ``i``-row, which is what they number after compressing along
``i``. So ``v`` is attained by a *down-set* of the box, whose full ``i``-lines are its cells
with ``q_i = n_i - 1``. In two dimensions a down-set is a partition: ``r`` full rows of
length ``b`` and columns full up to the shortest row ``c`` use ``r*b + (a-r)*c`` cells, which
gives ``v`` in closed form. In more dimensions the box is a chain of down-sets of its other
axes along its longest axis; a dynamic programme over the chain gives ``v`` exactly while the
number of down-sets of those axes stays small (:data:`MAX_DOWNSETS`); beyond it the caller
keeps the other bounds.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from topology.index import FloatArray, IntArray

MAX_DOWNSETS = 64
"""Largest number of down-sets of the non-chain axes handled exactly."""

MAX_CELLS = 1024
"""Largest box (slots) handled exactly in three or more dimensions."""

NEG = -np.inf


def _downsets(sizes: Sequence[int], limit: int) -> list[np.ndarray] | None:
    """Every down-set of the box ``sizes`` as a boolean array, or ``None`` past ``limit``."""
    if not sizes:
        return [np.ones((), dtype=np.bool_), np.zeros((), dtype=np.bool_)]
    inner = _downsets(sizes[:-1], limit)
    if inner is None:
        return None
    # A down-set is a chain inner[t0] >= inner[t1] >= ... along the last axis.
    contains = np.array([[bool(np.all(a >= b)) for b in inner] for a in inner])
    out: list[np.ndarray] = []

    def extend(chain: list[int]) -> bool:
        if len(chain) == sizes[-1]:
            out.append(np.stack([inner[i] for i in chain], axis=-1))
            return len(out) <= limit
        last = chain[-1] if chain else None
        for i in range(len(inner)):
            if last is None or contains[last, i]:
                chain.append(i)
                ok = extend(chain)
                chain.pop()
                if not ok:
                    return False
        return True

    if not extend([]):
        return None
    return out


def _full_lines_weight(cells: np.ndarray, weights: Sequence[float]) -> float:
    """Weight of the full lines of a down-set: its cells at the top of each axis."""
    total = 0.0
    for axis, w in enumerate(weights):
        if w:
            top = np.take(cells, cells.shape[axis] - 1, axis=axis)
            total += w * int(top.sum())
    return total


def _two_axes(sizes: Sequence[int], weights: Sequence[float], cells: int) -> FloatArray:
    a, b = sizes
    w_a, w_b = weights
    v = np.zeros(cells + 1, dtype=np.float64)
    # r full lines along axis 1 (each b cells), every one of the a lines at least c long,
    # which makes c full lines along axis 0.
    for r in range(a + 1):
        for c in range(b + 1):
            if r == a and c < b:
                continue
            need = r * b + (a - r) * c
            if need <= cells:
                v[need] = max(v[need], w_b * r + w_a * c)
    return np.maximum.accumulate(v)


def _chain(sizes: Sequence[int], weights: Sequence[float], cells: int) -> FloatArray | None:
    long_axis = int(np.argmax(sizes))
    rest = [s for i, s in enumerate(sizes) if i != long_axis]
    rest_w = [w for i, w in enumerate(weights) if i != long_axis]
    base = _downsets(rest, MAX_DOWNSETS)
    if base is None:
        return None
    size = np.array([int(d.sum()) for d in base], dtype=np.int64)
    gain = np.array([_full_lines_weight(d, rest_w) for d in base], dtype=np.float64)
    contains = np.array([[bool(np.all(a >= b)) for b in base] for a in base])
    # f[T, s]: best weight of the layers so far, the last being T, with s cells.
    f = np.full((len(base), cells + 1), NEG)
    for t in range(len(base)):
        f[t, size[t]] = gain[t]
    for _ in range(sizes[long_axis] - 1):
        new = np.full_like(f, NEG)
        for t in range(len(base)):
            parents = f[contains[:, t]]
            if parents.size == 0:
                continue
            best = parents.max(axis=0)
            shifted = np.full(cells + 1, NEG)
            shifted[size[t] :] = best[: cells + 1 - size[t]]
            new[t] = shifted + gain[t]
        f = new
    # The top layer's cells are the full lines along the long axis.
    v = (f + (weights[long_axis] * size)[:, None]).max(axis=0)
    v[~np.isfinite(v)] = 0.0
    return np.maximum.accumulate(v)


def line_values(sizes: Sequence[int], weights: Sequence[float]) -> FloatArray | None:
    """``v(k)`` for ``k = 0..prod(sizes)``: most line weight ``k`` cells of the box can hold.

    Args:
        sizes: the box (slot digits).
        weights: weight of one full line along each axis.

    Returns:
        ``v`` (non-decreasing), or ``None`` when the box is too large to solve exactly.
    """
    cells = int(np.prod(sizes))
    if len(sizes) == 1:
        v = np.zeros(cells + 1, dtype=np.float64)
        v[cells] = weights[0]
        return v
    if len(sizes) == 2:
        return _two_axes(sizes, weights, cells)
    if cells > MAX_CELLS:
        return None
    return _chain(sizes, weights, cells)


def max_contained(values: FloatArray, free: IntArray, hosts: int) -> float:
    """``max sum_D v(k_D)`` over ``sum_D k_D = hosts`` and ``0 <= k_D <= F_D`` (knapsack).

    One max-plus convolution per domain, each a single numpy operation over a sliding window.
    Domains of equal (clipped) capacity are interchangeable and a job of ``hosts`` slots uses
    at most ``hosts`` domains, so no more than ``hosts`` copies of each capacity are kept.
    """
    values_caps, counts = np.unique(np.minimum(free[free > 0], hosts), return_counts=True)
    caps = np.repeat(values_caps, np.minimum(counts, hosts))
    best = np.full(hosts + 1, NEG)
    best[0] = 0.0
    reach = 0
    for cap in np.sort(caps)[::-1].tolist():
        reach = min(hosts, reach + cap)
        padded = np.concatenate([np.full(cap, NEG), best[: reach + 1]])
        windows = sliding_window_view(padded, cap + 1)
        best[: reach + 1] = (windows + values[cap::-1][None, :]).max(axis=1)
    return float(best[hosts]) if np.isfinite(best[hosts]) else float("-inf")
