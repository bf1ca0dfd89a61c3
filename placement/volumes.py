"""Bytes each GPU sends per training step along each parallel dimension.

Formulas of placement.md section 2 (ring collectives: all-reduce sends ``2(n-1)/n`` of the
message per GPU, all-gather and reduce-scatter ``(n-1)/n``). Notation: ``t, c, e, d, p`` the
TP, CP, EP, DP and PP sizes; ``m`` micro-batches per step per pipeline, ``b`` micro-batch size
in sequences, ``s`` sequence length, ``h`` hidden size, ``L`` layers, ``Psi`` parameters,
``kv = kv_heads * head_dim``, ``B`` bytes per element, ``v`` virtual pipeline stages:

- TP (+SP): ``m * (L/p) * 4 * 2(t-1)/t * b*(s/c)*h * B``, times 1.5 with full recompute;
- PP: ``m * 2 * v * b*(s/c)*h/t * B``;
- DP over ``n = d*c`` ranks (Megatron reduces gradients over the dp-cp group; the volume is
  attributed to the DP groups): ``ddp``/``zero1``/``zero2`` ``2(n-1)/n * Psi/(t*p) * B_grad``;
  ``zero3``/``fsdp`` ``3(n-1)/n * Psi/(t*p) * B``; ``llama3_fsdp`` (fp32 reduce-scatter plus
  one bf16 all-gather) ``(n-1)/n * Psi/(t*p) * (4 + 2)``;
- CP: ``all_gather`` ``m*(L/p) * 2(c-1) * b*(s/c) * 2*kv/t * B``; ``ring`` 1.5 times that;
  ``a2a`` (Ulysses) ``2 * m*(L/p) * (c-1)/c * b*(s/c) * (2h + 2kv)/t * B`` (forward and
  backward);
- EP: ``m * (L_moe/p) * 4 * k * T * h * B * (e-1)/e`` with ``T = b*(s/c)/t`` tokens per rank
  per micro-batch (sequence parallelism on) and ``k`` the router's top-k.

Without a model shape, :data:`DEFAULT_VOLUMES_GB` apply: Llama 3 405B on 16,384 GPUs
(TP8/PP16/DP128, 8K context; CP from the 128K-context configuration), which gives the ratio
TP:DP:CP:PP of about 221:18:15:1 (placement.md section 2.2). EP has no published figure for
that model; 30 GB is the EP formula above for a hypothetical MoE of the same shape (every layer
MoE, top-2 of 8 experts, m = 16): it sits between TP and DP, as all-to-all traffic does.

**Messages** (the latency term of :mod:`placement.cost`): sequential messages each GPU
exchanges along a dimension per step, the collectives per step times the steps of each
(NCCL's model, placement.md [22]: a ring all-reduce takes ``2(n-1)`` steps, an all-gather
or reduce-scatter ``n-1``; a p2p send or an all-to-all, whose peers are served in parallel,
one):

- TP: ``m * (L/p) * 4`` all-reduces (1.5 times with recompute), ``2(t-1)`` steps each;
- CP: ``m * (L/p) * 2`` all-gathers/reduce-scatters (or ring passes), ``c-1`` steps each;
  ``a2a``: ``m * (L/p) * 8`` all-to-alls;
- DP over ``n = d*c``: ``ddp``/``zero1``/``zero2`` one all-reduce per gradient bucket of
  40M elements (Megatron's default bucket), ``2(n-1)`` steps; ``zero3``/``fsdp`` three
  collectives per layer (gather forward and backward, reduce-scatter), ``llama3_fsdp`` two,
  ``n-1`` steps each;
- PP: ``2 * m * v`` sends; EP: ``m * (L_moe/p) * 4`` all-to-alls.

Without a model shape the collectives per step of the default configuration above apply
(:data:`DEFAULT_COLLECTIVES`), with ring steps from the job's own sizes.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from placement.dims import Dim

GB = 1e9

DEFAULT_VOLUMES_GB: dict[Dim, float] = {
    "tp": 236.8,
    "cp": 15.9,
    "ep": 30.0,
    "dp": 18.8,
    "pp": 1.07,
}
"""Bytes per GPU per step (GB) of each dimension when the request gives no model shape."""

DEFAULT_COLLECTIVES: dict[Dim, float] = {
    "tp": 16 * 126 / 16 * 4,
    "cp": 16 * 126 / 16 * 2,
    "ep": 16 * 126 / 16 * 4,
    "dp": 126 / 16 * 2,
    "pp": 2 * 16,
}
"""Collectives per step of each dimension for Llama 3 405B (m = 16 micro-batches, 126 layers
over 16 stages, Llama 3 FSDP) when the request gives no model shape."""

BUCKET_ELEMENTS = 40e6
"""Gradient bucket of Megatron's distributed optimizer (elements)."""

PositiveInt = Annotated[int, Field(ge=1)]


class DpMode(StrEnum):
    """How data-parallel ranks exchange gradients and parameters."""

    DDP = "ddp"
    ZERO1 = "zero1"
    ZERO2 = "zero2"
    ZERO3 = "zero3"
    FSDP = "fsdp"
    LLAMA3_FSDP = "llama3_fsdp"


class CpMode(StrEnum):
    """Context-parallel communication scheme (Megatron ``cp_comm_type``)."""

    ALL_GATHER = "all_gather"
    RING = "ring"
    A2A = "a2a"


class ModelShape(BaseModel):
    """The model and batch shape the communication volumes are computed from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: PositiveInt
    hidden: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    params: Annotated[float, Field(gt=0)]
    """Parameter count (not bytes)."""
    seq_len: PositiveInt
    micro_batch: PositiveInt = 1
    micro_batches: PositiveInt = 1
    """Micro-batches per step per pipeline (``m``)."""
    dp_mode: DpMode = DpMode.FSDP
    cp_mode: CpMode = CpMode.ALL_GATHER
    recompute: bool = False
    virtual_stages: PositiveInt = 1
    moe_layers: Annotated[int, Field(ge=0)] = 0
    """Layers with experts; 0 means every layer when ``ep > 1``."""
    top_k: PositiveInt = 2
    bytes_per_element: PositiveInt = 2
    grad_bytes: PositiveInt = 2
    """Bytes per gradient element for ``ddp``/``zero1``/``zero2``."""


def model_volumes_gb(shape: ModelShape, sizes: dict[Dim, int]) -> dict[Dim, float]:
    """Bytes per GPU per step (GB) of each dimension (formulas in the module docstring).

    Dimensions of size 1 move nothing.
    """
    t, c, e, d, p = (sizes[k] for k in ("tp", "cp", "ep", "dp", "pp"))
    m, b, s, h = shape.micro_batches, shape.micro_batch, shape.seq_len, shape.hidden
    bpe = shape.bytes_per_element
    kv = shape.kv_heads * shape.head_dim
    layers_per_stage = shape.layers / p
    tokens = b * (s / c)
    out: dict[Dim, float] = {"tp": 0.0, "cp": 0.0, "ep": 0.0, "dp": 0.0, "pp": 0.0}
    if t > 1:
        tp = m * layers_per_stage * 4 * 2 * (t - 1) / t * tokens * h * bpe
        out["tp"] = tp * (1.5 if shape.recompute else 1.0)
    if p > 1:
        out["pp"] = m * 2 * shape.virtual_stages * tokens * h / t * bpe
    if d > 1:
        n = d * c
        shard = shape.params / (t * p)
        if shape.dp_mode in (DpMode.DDP, DpMode.ZERO1, DpMode.ZERO2):
            out["dp"] = 2 * (n - 1) / n * shard * shape.grad_bytes
        elif shape.dp_mode in (DpMode.ZERO3, DpMode.FSDP):
            out["dp"] = 3 * (n - 1) / n * shard * bpe
        else:
            out["dp"] = (n - 1) / n * shard * (4 + 2)
    if c > 1:
        if shape.cp_mode is CpMode.A2A:
            out["cp"] = 2 * m * layers_per_stage * (c - 1) / c * tokens * (2 * h + 2 * kv) / t * bpe
        else:
            all_gather = m * layers_per_stage * 2 * (c - 1) * tokens * 2 * kv / t * bpe
            out["cp"] = all_gather * (1.5 if shape.cp_mode is CpMode.RING else 1.0)
    if e > 1:
        moe_layers = shape.moe_layers or shape.layers
        per_rank_tokens = tokens / t
        out["ep"] = m * (moe_layers / p) * 4 * shape.top_k * per_rank_tokens * h * bpe
        out["ep"] *= (e - 1) / e
    return {dim: value / GB for dim, value in out.items()}


def dimension_volumes_gb(
    sizes: dict[Dim, int],
    shape: ModelShape | None = None,
    explicit: dict[Dim, float] | None = None,
) -> dict[Dim, float]:
    """Bytes per GPU per step (GB) per dimension: explicit, else from the shape, else defaults.

    A dimension of size 1 always gets 0.
    """
    base = model_volumes_gb(shape, sizes) if shape is not None else dict(DEFAULT_VOLUMES_GB)
    if explicit:
        base.update(explicit)
    return {dim: (value if sizes[dim] > 1 else 0.0) for dim, value in base.items()}


def _ring_steps(dim: Dim, sizes: dict[Dim, int], cp_a2a: bool) -> float:
    """Sequential steps of one collective of ``dim`` (see the module docstring)."""
    n = sizes[dim]
    if dim == "tp":
        return 2.0 * (n - 1)
    if dim == "cp":
        return 1.0 if cp_a2a else float(n - 1)
    if dim == "dp":
        return float(sizes["dp"] * sizes["cp"] - 1)
    return 1.0


def dimension_messages(sizes: dict[Dim, int], shape: ModelShape | None = None) -> dict[Dim, float]:
    """Sequential messages per GPU per step along each dimension (module docstring).

    Dimensions of size 1 send none.
    """
    collectives = dict(DEFAULT_COLLECTIVES)
    cp_a2a = False
    steps_scale: dict[Dim, float] = {}
    if shape is not None:
        m = shape.micro_batches
        per_stage = shape.layers / sizes["pp"]
        collectives["tp"] = m * per_stage * 4 * (1.5 if shape.recompute else 1.0)
        cp_a2a = shape.cp_mode is CpMode.A2A
        collectives["cp"] = m * per_stage * (8 if cp_a2a else 2)
        if shape.dp_mode in (DpMode.DDP, DpMode.ZERO1, DpMode.ZERO2):
            shard = shape.params / (sizes["tp"] * sizes["pp"])
            collectives["dp"] = float(max(1, -(-int(shard) // int(BUCKET_ELEMENTS))))
            steps_scale["dp"] = 2.0
        elif shape.dp_mode in (DpMode.ZERO3, DpMode.FSDP):
            collectives["dp"] = per_stage * 3
        else:
            collectives["dp"] = per_stage * 2
        collectives["pp"] = 2.0 * m * shape.virtual_stages
        moe = shape.moe_layers or shape.layers
        collectives["ep"] = m * moe / sizes["pp"] * 4
    out: dict[Dim, float] = {}
    for dim, count in collectives.items():
        if sizes[dim] <= 1:
            out[dim] = 0.0
            continue
        out[dim] = count * _ring_steps(dim, sizes, cp_a2a) * steps_scale.get(dim, 1.0)
    return out
