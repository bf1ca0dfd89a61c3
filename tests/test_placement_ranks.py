"""Parallel groups (Megatron semantics), host-slot layouts and the verifier's span counts."""

from __future__ import annotations

import numpy as np
import pytest
from placement_builders import fat_tree
from placement_reference import megatron_groups

from placement import Parallelism
from placement.ranks import SlotDigit, group_ranks, job_layout, span_histograms, span_levels


def test_groups_match_megatron_docstring_example() -> None:
    # generate_masked_orthogonal_rank_groups docstring: 16 GPUs, TP2, PP4 (so DP2),
    # order tp-dp-pp: TP [g0,g1],[g2,g3]...; DP [g0,g2],[g1,g3]...; PP [g0,g4,g8,g12]...
    par = Parallelism(tp=2, dp=2, pp=4, order="tp-dp-pp")

    assert group_ranks(par, "tp").tolist()[:3] == [[0, 1], [2, 3], [4, 5]]
    assert group_ranks(par, "dp").tolist()[:4] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert group_ranks(par, "pp").tolist()[:2] == [[0, 4, 8, 12], [1, 5, 9, 13]]


def test_cp_groups_are_counterparts_in_other_tp_groups() -> None:
    # Docstring: TP4, CP2 gives CP groups [GPU0, GPU4], ...
    par = Parallelism(tp=4, cp=2)

    assert group_ranks(par, "cp").tolist()[:4] == [[0, 4], [1, 5], [2, 6], [3, 7]]


@pytest.mark.parametrize(
    "par",
    [
        Parallelism(tp=2, cp=3, dp=2, pp=2),
        Parallelism(tp=4, ep=2, dp=3, order="tp-ep-pp-dp", pp=2),
        Parallelism(tp=2, cp=2, dp=2, pp=3, order="pp-tp-dp-cp"),
    ],
)
def test_group_enumeration_agrees_with_a_plain_coordinate_definition(par: Parallelism) -> None:
    for dim in ("tp", "cp", "ep", "dp", "pp"):
        ours = sorted(map(sorted, group_ranks(par, dim).tolist()))

        assert ours == megatron_groups(par, dim)


def test_layout_digits_split_at_the_host() -> None:
    assert job_layout(Parallelism(tp=8, dp=128, pp=16), 8).digits == (
        SlotDigit("dp", 128),
        SlotDigit("pp", 16),
    )
    # tp4 x cp4 on 8-GPU hosts: cp straddles (2 inside, 2 across).
    assert job_layout(Parallelism(tp=4, cp=4, dp=2), 8).digits == (
        SlotDigit("cp", 2),
        SlotDigit("dp", 2),
    )
    # tp2 cp3 cannot split at 8: one irregular digit for the whole job.
    irregular = job_layout(Parallelism(tp=2, cp=3, dp=4), 8)
    assert irregular.digits == (SlotDigit(None, 3),)
    assert not irregular.regular
    assert job_layout(Parallelism(tp=4), 8).num_hosts == 1


def test_transposed_layout_is_a_bijection_nesting_the_heaviest_first() -> None:
    layout = job_layout(Parallelism(tp=8, cp=4, dp=8), 8)
    transposed = layout.transposed({"cp": 15.9, "dp": 18.8}, frozenset())
    positions = transposed.physical_positions()

    assert transposed.physical_dims == ("dp", "cp")
    assert sorted(positions.tolist()) == list(range(32))
    # Logical slot 1 (cp=1, dp=0) goes to the first slot of the second DP line.
    assert positions[1] == 8
    assert positions[4] == 1
    assert layout.physical_positions().tolist() == list(range(32))
    assert [b for _, b in transposed.blocks()] == [8, 32]


def test_span_levels_and_histograms_on_a_small_tree() -> None:
    index = fat_tree(2, 2, 2).index  # hosts 0-1 leaf 0, 2-3 leaf 1 (pod 0), 4-7 pod 1
    groups = np.array([[0, 1], [2, 3], [4, 5]])

    assert span_levels(index, np.array([0, 0, 1, 2, 3, 4]), groups).tolist() == [0, 2, 3]
    assert span_levels(index, np.array([0, 0, 1, 2, 4, 5]), groups).tolist() == [0, 2, 1]

    par = Parallelism(tp=8, dp=4)
    rank_hosts = np.repeat(np.array([0, 1, 2, 4]), 8)
    hist = span_histograms(index, par, rank_hosts)
    assert hist["tp"].tolist() == [4, 0, 0, 0]
    assert hist["dp"].tolist() == [0, 0, 0, 8]
