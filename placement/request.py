"""What a job asks of the placer: GPU count, parallelism sizes and rank order, hard rules.

**Rank order.** Frameworks fix which ranks form each parallel group; the placer only decides
which GPU each rank runs on, so it must know the framework's order (placement.md section 1).
:class:`Parallelism` takes the five sizes ``tp, cp, ep, dp, pp`` and an ``order`` string in
one of two conventions, and normalises both to one canonical form, *innermost first*:

- ``megatron`` (default): the order lists dimensions **leftmost fastest**, as Megatron-Core's
  ``order="tp-cp-ep-dp-pp"``, so ``global_rank = tp + TP*(cp + CP*(ep + EP*(dp + DP*pp)))``.
  Llama 3's "[TP, CP, PP, DP]" (innermost first) is ``tp-cp-pp-dp`` in this convention.
- ``row_major``: the order lists dimensions **rightmost fastest**, as a torchtitan
  ``DeviceMesh`` (``pp, dp, cp, tp``) or DeepSpeed ``ProcessTopology`` axes
  (``pipe, data, model``) are written; ``pp-dp-cp-tp`` here is ``tp-cp-dp-pp`` in Megatron's.

Names may be the short ones or aliases (``tensor``/``model`` -> tp, ``context`` -> cp,
``expert`` -> ep, ``data`` -> dp, ``pipe``/``pipeline`` -> pp); separators ``-``, ``,``,
space or ``/``. Dimensions of size 1 may be left out of the order. After validation
``order`` holds the canonical Megatron-convention string of all five dimensions and
``order_convention`` is ``megatron``, so equal layouts compare equal.

**EP** is its own factor of the world size here (``tp*cp*ep*dp*pp == gpus``, as the job spec
requires). Megatron's expert ranks instead re-use DP ranks; express such a job with ``ep=E`` and
``dp=D/E``, which gives the same expert groups and keeps ``ep x dp`` as the dense DP group.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from placement.dims import DIMS, Dim
from placement.errors import InvalidRequestError
from placement.volumes import ModelShape

DEFAULT_ORDER = "tp-cp-ep-dp-pp"

_ALIASES: dict[str, Dim] = {
    "tp": "tp",
    "tensor": "tp",
    "model": "tp",
    "cp": "cp",
    "context": "cp",
    "ep": "ep",
    "expert": "ep",
    "dp": "dp",
    "data": "dp",
    "pp": "pp",
    "pipe": "pp",
    "pipeline": "pp",
}
_SEPARATORS = re.compile(r"[-,\s/]+")

PositiveInt = Annotated[int, Field(ge=1)]


class OrderConvention(StrEnum):
    """How an ``order`` string is read."""

    MEGATRON = "megatron"
    """Leftmost dimension fastest (Megatron-Core ``order``)."""
    ROW_MAJOR = "row_major"
    """Rightmost dimension fastest (torchtitan ``DeviceMesh`` dims, DeepSpeed axes)."""


class Parallelism(BaseModel):
    """Parallelism sizes and the framework's rank order (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tp: PositiveInt = 1
    cp: PositiveInt = 1
    ep: PositiveInt = 1
    dp: PositiveInt = 1
    pp: PositiveInt = 1
    order: str = DEFAULT_ORDER
    """Rank order; canonical (Megatron convention, all five dimensions) after validation."""
    order_convention: OrderConvention = OrderConvention.MEGATRON

    @field_validator("order", mode="before")
    @classmethod
    def _join_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "-".join(str(v) for v in value)
        return value

    @model_validator(mode="after")
    def _normalise(self) -> Parallelism:
        inner_first = _parse_order(self.order, self.order_convention, self.sizes)
        object.__setattr__(self, "order", "-".join(inner_first))
        object.__setattr__(self, "order_convention", OrderConvention.MEGATRON)
        return self

    @property
    def sizes(self) -> dict[Dim, int]:
        """Size of every dimension."""
        return {"tp": self.tp, "cp": self.cp, "ep": self.ep, "dp": self.dp, "pp": self.pp}

    @property
    def innermost_first(self) -> tuple[Dim, ...]:
        """All five dimensions, the fastest-varying first."""
        return tuple(_ALIASES[name] for name in self.order.split("-"))

    @property
    def world_size(self) -> int:
        """``tp * cp * ep * dp * pp``."""
        return math.prod(self.sizes.values())

    def prefix_gpus(self, dim: Dim) -> int:
        """Ranks in the aligned block holding complete groups of ``dim``.

        The product of the sizes of ``dim`` and every dimension faster than it: a group of
        ``dim`` lies inside one such block of consecutive ranks.
        """
        product = 1
        for name in self.innermost_first:
            product *= self.sizes[name]
            if name == dim:
                return product
        raise AssertionError(f"{dim} missing from the normalised order")  # pragma: no cover


def _parse_order(order: str, convention: OrderConvention, sizes: dict[Dim, int]) -> list[Dim]:
    tokens = [t for t in _SEPARATORS.split(order.strip().lower()) if t]
    dims: list[Dim] = []
    for token in tokens:
        dim = _ALIASES.get(token)
        if dim is None:
            raise InvalidRequestError(
                f"order {order!r}: unknown dimension {token!r} (use tp, cp, ep, dp, pp)",
                reason="invalid_order",
            )
        if dim in dims:
            raise InvalidRequestError(
                f"order {order!r}: dimension {dim} appears twice", reason="invalid_order"
            )
        dims.append(dim)
    if convention is OrderConvention.ROW_MAJOR:
        dims.reverse()
    missing = [d for d in DIMS if d not in dims]
    sized = [d for d in missing if sizes[d] > 1]
    if sized:
        raise InvalidRequestError(
            f"order {order!r} leaves out {', '.join(sized)}, whose size is above 1",
            reason="invalid_order",
        )
    return dims + missing


class PlacementRequest(BaseModel):
    """One job's placement request.

    Attributes:
        gpus: GPUs the job needs; must equal ``tp*cp*ep*dp*pp``.
        parallelism: sizes and order; ``None`` means pure data parallelism (``dp = gpus``).
        model: optional model shape from which bytes per GPU per step are computed
            (placement.md section 2); otherwise the defaults of :mod:`placement.volumes`.
        volumes_gb: explicit bytes per GPU per step (GB) per dimension; overrides ``model``.
        required_tier: per dimension, the tier (a level name of the topology, such as
            ``"leaf"`` or ``"pod"``) one of whose domains must hold each group entirely.
        nvlink_dims: dimensions whose groups must stay inside one NVLink domain; ``tp``
            always does (added if missing). Add ``ep``/``cp`` for intra-host EP or CP.
        max_leaves: at most this many leaf (lowest switch tier) domains, like Slurm's
            ``--switches``.
        excluded_hosts: host names the job must not use.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: PositiveInt
    parallelism: Parallelism | None = None
    model: ModelShape | None = None
    volumes_gb: dict[Dim, Annotated[float, Field(ge=0)]] | None = None
    required_tier: dict[Dim, str] = Field(default_factory=dict)
    nvlink_dims: frozenset[Dim] = frozenset({"tp"})
    max_leaves: PositiveInt | None = None
    excluded_hosts: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _check(self) -> PlacementRequest:
        object.__setattr__(self, "parallelism", resolve_parallelism(self.parallelism, self.gpus))
        if "tp" not in self.nvlink_dims:
            object.__setattr__(self, "nvlink_dims", self.nvlink_dims | {"tp"})
        return self

    @property
    def par(self) -> Parallelism:
        """The parallelism (never ``None`` after validation)."""
        if self.parallelism is None:  # pragma: no cover - set by the validator
            raise AssertionError("parallelism is set by validation")
        return self.parallelism


__all__ = [
    "DEFAULT_ORDER",
    "DIMS",
    "Dim",
    "OrderConvention",
    "Parallelism",
    "PlacementRequest",
]


def resolve_parallelism(parallelism: Parallelism | None, gpus: int) -> Parallelism:
    """The parallelism of a job of ``gpus`` GPUs: pure data parallelism when none is given.

    Raises:
        InvalidRequestError: ``parallelism_mismatch`` when ``tp*cp*ep*dp*pp != gpus``.
    """
    par = parallelism if parallelism is not None else Parallelism(dp=gpus)
    if par.world_size != gpus:
        sizes = par.sizes
        product = "*".join(str(sizes[d]) for d in DIMS)
        raise InvalidRequestError(
            f"tp*cp*ep*dp*pp = {product} = {par.world_size}, but the job asks for {gpus} GPUs",
            reason="parallelism_mismatch",
        )
    return par
