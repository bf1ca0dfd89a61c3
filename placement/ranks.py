"""Parallel groups of a job, its host-slot layout, and the verifier's span counts.

**Groups** follow Megatron's ``generate_masked_orthogonal_rank_groups`` semantics: with the
dimensions innermost first and sizes ``n_0, n_1, ...``, rank ``r`` has coordinate
``(r // stride_k) % n_k`` on dimension ``k`` where ``stride_k = n_0 * ... * n_{k-1}``; a group
of dimension ``k`` is the set of ranks that differ only in that coordinate. So a group of
``k`` has ``n_k`` members spaced ``stride_k`` apart and lies in one aligned block of
``stride_k * n_k`` consecutive ranks.

**Host slots.** The rank table puts rank ``r`` on local GPU ``r mod G`` of the host in logical
slot ``r // G`` (``G`` GPUs per host: rail alignment, consecutive ranks per NVLink domain). A
job of ``N > G`` GPUs is *regular* when the dimensions' sizes split at ``G``: the innermost
dimensions multiply to exactly ``G`` (or one dimension straddles the boundary with a ``lo``
part inside the host and a ``hi`` part across hosts). The slot index is then a mixed-radix
number whose *digits* are the remaining dimensions (:class:`SlotDigit`); a group of a digit's
dimension is a *line* of slots along that digit. Irregular jobs get one digit for the whole job.

**Physical layout.** The placer may put logical slots on hosts through any bijection; the
framework's groups stay what the order says. A :class:`JobLayout` fixes the bijection as a
permutation of the digits: physical position ``p`` of a slot is the same mixed-radix number
with the digits nested in :attr:`JobLayout.physical` order, and the fill order lays physical
positions ``0..H-1`` onto hosts in topology order. The identity keeps the framework's nesting;
the *transposed* layout nests the heaviest dimension innermost (placement.md section 4.3).

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from placement.dims import Dim
from placement.request import Parallelism
from topology.index import IntArray, TopologyIndex


@dataclass(frozen=True, slots=True)
class SlotDigit:
    """One digit of the host-slot index.

    Attributes:
        dim: the dimension whose groups vary along this digit; ``None`` for the single digit
            of an irregular job.
        hosts: the digit's size (slots along one line).
    """

    dim: Dim | None
    hosts: int


@dataclass(frozen=True, slots=True)
class JobLayout:
    """How a job's ranks map to host slots and slots to physical fill positions.

    Attributes:
        gpus: the job's GPU count ``N``.
        gpus_per_host: ``G``.
        num_hosts: ``H = ceil(N / G)`` slots.
        digits: slot digits in the framework's order, innermost first (empty for one host).
        physical: physical nesting, innermost first, as indices into ``digits``.
    """

    gpus: int
    gpus_per_host: int
    num_hosts: int
    digits: tuple[SlotDigit, ...]
    physical: tuple[int, ...]

    @property
    def regular(self) -> bool:
        """Every digit belongs to one dimension."""
        return all(d.dim is not None for d in self.digits)

    @property
    def is_identity(self) -> bool:
        """The physical nesting is the framework's."""
        return self.physical == tuple(range(len(self.digits)))

    @property
    def physical_dims(self) -> tuple[str, ...]:
        """Dimension names in physical nesting order, innermost first."""
        return tuple(self.digits[i].dim or "job" for i in self.physical)

    def physical_positions(self) -> IntArray:
        """Physical fill position of every logical slot ``0..H-1``."""
        slots = np.arange(self.num_hosts, dtype=np.int64)
        if len(self.digits) <= 1:
            return slots
        sizes = [d.hosts for d in self.digits]
        logical_stride = np.cumprod([1, *sizes[:-1]])
        physical_stride = np.zeros(len(sizes), dtype=np.int64)
        stride = 1
        for digit in self.physical:
            physical_stride[digit] = stride
            stride *= sizes[digit]
        position = np.zeros_like(slots)
        for k, size in enumerate(sizes):
            position += ((slots // logical_stride[k]) % size) * physical_stride[k]
        return position

    def blocks(self) -> list[tuple[int, int]]:
        """``(digit index, block hosts)`` in physical order.

        The block of the digit at physical position ``i`` is the product of the sizes at
        positions ``0..i``: consecutive physical positions that hold whole lines of it.
        """
        out = []
        block = 1
        for digit in self.physical:
            block *= self.digits[digit].hosts
            out.append((digit, block))
        return out

    def transposed(self, weights: Mapping[Dim, float], pinned: frozenset[Dim]) -> JobLayout:
        """The layout nesting digits by weight, heaviest innermost; ``pinned`` dims first.

        Ties keep the framework's order.
        """
        if not self.regular:
            return self

        def key(i: int) -> tuple[int, float, int]:
            dim = self.digits[i].dim
            assert dim is not None  # regular
            return (0 if dim in pinned else 1, -weights.get(dim, 0.0), i)

        order = tuple(sorted(range(len(self.digits)), key=key))
        return JobLayout(self.gpus, self.gpus_per_host, self.num_hosts, self.digits, order)


def job_layout(par: Parallelism, gpus_per_host: int) -> JobLayout:
    """The identity layout of ``par`` on hosts of ``gpus_per_host`` GPUs."""
    sizes = par.sizes
    dims = [(d, sizes[d]) for d in par.innermost_first if sizes[d] > 1]
    gpus = par.world_size
    g = gpus_per_host
    hosts = -(-gpus // g)
    if hosts <= 1:
        return JobLayout(gpus, g, 1, (), ())
    digits: list[SlotDigit] | None = None
    if gpus % g == 0:
        inside = 1
        k = 0
        while k < len(dims) and g % (inside * dims[k][1]) == 0:
            inside *= dims[k][1]
            k += 1
        if inside == g:
            digits = [SlotDigit(d, n) for d, n in dims[k:]]
        elif k < len(dims) and dims[k][1] % (g // inside) == 0:
            lo = g // inside
            digits = [SlotDigit(dims[k][0], dims[k][1] // lo)]
            digits += [SlotDigit(d, n) for d, n in dims[k + 1 :]]
    if digits is None:
        digits = [SlotDigit(None, hosts)]
    return JobLayout(gpus, g, hosts, tuple(digits), tuple(range(len(digits))))


# ---------------------------------------------------------------------------- groups


def group_ranks(par: Parallelism, dim: Dim) -> IntArray:
    """Every group of ``dim`` as a row of ranks, ``(groups, size)``.

    Rows are ordered by the outer coordinates, then by the inner (stride) offset.
    """
    sizes = par.sizes
    stride = 1
    for name in par.innermost_first:
        if name == dim:
            break
        stride *= sizes[name]
    size = sizes[dim]
    total = par.world_size
    outer = total // (stride * size)
    grid = np.arange(total, dtype=np.int64).reshape(outer, size, stride)
    return grid.transpose(0, 2, 1).reshape(-1, size)


def multi_rank_dims(par: Parallelism) -> list[Dim]:
    """Dimensions with groups of more than one rank, in the framework's order."""
    sizes = par.sizes
    return [d for d in par.innermost_first if sizes[d] > 1]


def span_levels(index: TopologyIndex, rank_hosts: IntArray, groups: IntArray) -> IntArray:
    """The lowest level whose one domain holds each group (0: one host).

    Because domains nest, a group spans level ``l`` exactly when it is split at the ``l``
    levels below, so the span is the count of levels at which members differ.
    """
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    hosts = rank_hosts[groups]
    ancestors = index.ancestors[hosts]
    same = np.all(ancestors == ancestors[:, :1, :], axis=1)
    return np.asarray((~same).sum(axis=1), dtype=np.int64)


def span_histograms(
    index: TopologyIndex, par: Parallelism, rank_hosts: IntArray
) -> dict[Dim, IntArray]:
    """Per multi-rank dimension, how many of its groups span each level (host .. cluster)."""
    out: dict[Dim, IntArray] = {}
    for dim in multi_rank_dims(par):
        spans = span_levels(index, rank_hosts, group_ranks(par, dim))
        out[dim] = np.bincount(spans, minlength=index.num_levels).astype(np.int64)
    return out


def groups_per_dim(par: Parallelism) -> dict[Dim, int]:
    """Number of groups of each multi-rank dimension."""
    sizes = par.sizes
    return {d: math.prod(sizes.values()) // sizes[d] for d in multi_rank_dims(par)}
