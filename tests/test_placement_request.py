"""Placement request types: order conventions, validation reasons, communication volumes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from placement import (
    CpMode,
    DpMode,
    InvalidRequestError,
    ModelShape,
    OrderConvention,
    Parallelism,
    PlacementParams,
    PlacementRequest,
)
from placement.volumes import DEFAULT_VOLUMES_GB, dimension_volumes_gb, model_volumes_gb

LLAMA_405B = {
    "layers": 126,
    "hidden": 16384,
    "kv_heads": 8,
    "head_dim": 128,
    "params": 405e9,
    "micro_batch": 1,
    "micro_batches": 16,
}


def test_default_order_is_megatron_innermost_first() -> None:
    par = Parallelism(tp=8, dp=4)

    assert par.order == "tp-cp-ep-dp-pp"
    assert par.innermost_first == ("tp", "cp", "ep", "dp", "pp")
    assert par.world_size == 32


@pytest.mark.parametrize(
    ("order", "convention", "expected"),
    [
        ("tp-cp-pp-dp", OrderConvention.MEGATRON, "tp-cp-pp-dp-ep"),
        ("pp-dp-cp-tp", OrderConvention.ROW_MAJOR, "tp-cp-dp-pp-ep"),
        ("pipe,data,model", OrderConvention.ROW_MAJOR, "tp-dp-pp-cp-ep"),
        (["tensor", "context", "data", "pipeline"], OrderConvention.MEGATRON, "tp-cp-dp-pp-ep"),
        ("TP DP", OrderConvention.MEGATRON, "tp-dp-cp-ep-pp"),
    ],
)
def test_orders_normalise_to_megatron_convention(
    order: str | list[str], convention: OrderConvention, expected: str
) -> None:
    par = Parallelism(tp=2, cp=1, dp=2, pp=1, order=order, order_convention=convention)

    assert par.order == expected
    assert par.order_convention is OrderConvention.MEGATRON


def test_torchtitan_mesh_and_megatron_default_are_the_same_layout() -> None:
    titan = Parallelism(tp=8, cp=2, dp=4, pp=2, order="pp-dp-cp-tp", order_convention="row_major")
    megatron = Parallelism(tp=8, cp=2, dp=4, pp=2, order="tp-cp-dp-pp")

    assert titan == megatron


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"tp": 2, "order": "tp-xp"}, "invalid_order"),
        ({"tp": 2, "order": "tp-tp"}, "invalid_order"),
        ({"tp": 2, "dp": 2, "order": "tp-cp"}, "invalid_order"),
    ],
)
def test_bad_orders_raise_stable_reasons(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Parallelism.model_validate(kwargs)

    assert caught.value.reason == reason


def test_product_must_equal_gpus() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        PlacementRequest(gpus=64, parallelism=Parallelism(tp=8, dp=4))

    assert caught.value.reason == "parallelism_mismatch"
    assert "8*1*1*4*1 = 32" in caught.value.message


def test_request_defaults_pure_dp_and_tp_in_nvlink() -> None:
    req = PlacementRequest(gpus=16, nvlink_dims=frozenset({"ep"}))

    assert req.par.dp == 16
    assert req.par.tp == 1
    assert req.nvlink_dims == {"tp", "ep"}


def test_requests_are_frozen_and_forbid_extra_keys() -> None:
    req = PlacementRequest(gpus=8)
    with pytest.raises(ValidationError):
        PlacementRequest.model_validate({"gpus": 8, "colour": "red"})
    with pytest.raises(ValidationError):
        req.gpus = 16

    assert req.gpus == 8


def test_prefix_gpus_is_the_aligned_block_of_a_dimension() -> None:
    par = Parallelism(tp=8, cp=2, dp=4, pp=2, order="tp-cp-dp-pp")

    assert [par.prefix_gpus(d) for d in ("tp", "cp", "dp", "pp")] == [8, 16, 64, 128]


# ---------------------------------------------------------------------------- volumes


def test_llama_405b_volumes_match_placement_md_table() -> None:
    # placement.md section 2.2, 16K GPUs, 8K sequence: TP 236.8 GB, DP 18.8 GB, PP 1.07 GB.
    shape = ModelShape(**LLAMA_405B, seq_len=8192, dp_mode=DpMode.LLAMA3_FSDP)
    volumes = model_volumes_gb(shape, {"tp": 8, "cp": 1, "ep": 1, "dp": 128, "pp": 16})

    assert volumes["tp"] == pytest.approx(236.8, rel=2e-3)
    assert volumes["dp"] == pytest.approx(18.8, rel=2e-3)
    assert volumes["pp"] == pytest.approx(1.07, rel=5e-3)
    assert volumes["cp"] == 0.0
    assert volumes["ep"] == 0.0


def test_llama_405b_128k_context_cp_volume() -> None:
    # 128K context, TP8 CP16 PP16 DP8: CP all-gather about 15.9 GB (section 2.2).
    shape = ModelShape(**LLAMA_405B, seq_len=131072, cp_mode=CpMode.ALL_GATHER)
    volumes = model_volumes_gb(shape, {"tp": 8, "cp": 16, "ep": 1, "dp": 8, "pp": 16})

    assert volumes["cp"] == pytest.approx(15.9, rel=3e-3)
    assert volumes["tp"] == pytest.approx(236.8, rel=2e-3)


def test_recompute_ring_cp_and_zero3_scale_as_documented() -> None:
    base = ModelShape(**LLAMA_405B, seq_len=131072, dp_mode=DpMode.DDP)
    sizes = {"tp": 8, "cp": 16, "ep": 1, "dp": 8, "pp": 16}
    v = model_volumes_gb(base, sizes)
    ring = model_volumes_gb(base.model_copy(update={"cp_mode": CpMode.RING}), sizes)
    recompute = model_volumes_gb(base.model_copy(update={"recompute": True}), sizes)
    zero3 = model_volumes_gb(base.model_copy(update={"dp_mode": DpMode.ZERO3}), sizes)

    assert ring["cp"] == pytest.approx(1.5 * v["cp"])
    assert recompute["tp"] == pytest.approx(1.5 * v["tp"])
    assert zero3["dp"] == pytest.approx(1.5 * v["dp"])


def test_ep_volume_is_zero_without_experts_and_positive_with() -> None:
    shape = ModelShape(**LLAMA_405B, seq_len=8192)
    with_ep = model_volumes_gb(shape, {"tp": 8, "cp": 1, "ep": 8, "dp": 16, "pp": 16})
    without = model_volumes_gb(shape, {"tp": 8, "cp": 1, "ep": 1, "dp": 128, "pp": 16})

    assert with_ep["ep"] > 0
    assert without["ep"] == 0.0


def test_default_volumes_keep_the_221_18_15_1_ratio_and_zero_unused_dims() -> None:
    ratio = {d: v / DEFAULT_VOLUMES_GB["pp"] for d, v in DEFAULT_VOLUMES_GB.items()}
    volumes = dimension_volumes_gb({"tp": 8, "cp": 1, "ep": 1, "dp": 4, "pp": 1})

    assert ratio["tp"] == pytest.approx(221, rel=0.01)
    assert ratio["dp"] == pytest.approx(17.6, rel=0.01)
    assert ratio["cp"] == pytest.approx(14.9, rel=0.01)
    assert volumes == {"tp": 236.8, "cp": 0.0, "ep": 0.0, "dp": 18.8, "pp": 0.0}


def test_explicit_volumes_override_and_exposure_defaults_per_dimension() -> None:
    volumes = dimension_volumes_gb({"tp": 8, "cp": 1, "ep": 1, "dp": 4, "pp": 1}, None, {"dp": 5.0})
    params = PlacementParams(exposure={"dp": 0.3})

    assert volumes["dp"] == 5.0
    assert params.exposure_of("dp") == 0.3
    assert params.exposure_of("pp") == 0.5
    assert params.exposure_of("cp") == 1.0
    assert PlacementParams.bandwidth_only().exposure_of("dp") == 1.0
