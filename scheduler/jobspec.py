"""The job spec users submit (YAML or JSON), validated by pydantic (DESIGN.md).

Keys: ``name``, ``gpus``, ``parallelism`` (``tp``, ``cp``, ``ep``, ``pp``, ``dp``, ``order``,
``order_convention``; :class:`placement.Parallelism`), ``command`` (argv list), ``env``,
``priority``, ``queue``, ``checkpoint`` (``dir``, ``interval_s``, ``signal``, ``grace_s``),
``max_restarts``, ``time_limit_s``, and ``launch`` (``per_rank``, the default: the agent
starts one process per rank; ``per_host``: one process per host, for launchers such as
torchrun). A job without ``parallelism`` is pure data parallelism (``dp = gpus``); with it,
``tp*cp*ep*dp*pp`` must equal ``gpus``. Unknown keys are errors.

One optional extension block, ``placement``, carries placement hints: ``required_tier``
(per dimension, a tier name such as ``pod``), ``nvlink_dims`` (dimensions that must stay in one
NVLink domain besides ``tp``), ``max_leaves`` (like Slurm ``--switches``), ``model`` (a
:class:`placement.ModelShape`) and ``volumes_gb`` (bytes per GPU per step per dimension).

Errors are one line: :class:`~topology.errors.InvalidInputError` with reason
``invalid_job_spec`` (or the stable reason of the rule broken, such as
``parallelism_mismatch`` or ``invalid_order``), prefixed with where the spec came from.

This module is the model and its validation from parsed data (a file's contents, a wire
message's fields); reading files is :mod:`scheduler.jobspec_file`'s job.

Must not import ``scheduler.core``, ``scheduler.store``, the generated protos or a file
parser (``yaml``); it does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from firsthop.reasons import ErrorReason
from placement import Dim, ModelShape, Parallelism, PlacementRequest
from placement.request import resolve_parallelism
from scheduler import limits
from topology.errors import FirsthopError, InvalidInputError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

FLAG_KEYS = frozenset({"recompute", "preemptible"})
"""The only keys of a spec whose value may be ``true``/``false`` (``placement.model``'s
``recompute``, and ``preemptible``)."""

Count = Annotated[int, Field(strict=True, ge=0, le=limits.MAX_INT)]
ShortText = Annotated[str, Field(max_length=limits.MAX_SHORT_TEXT_CHARS)]


CheckpointSignal = Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP"]
"""Signals a job may ask to be told with before a planned stop (``checkpoint.signal``)."""


class CheckpointSpec(BaseModel):
    """How the job checkpoints: where, how often, and how it is asked to on a planned stop.

    ``signal`` (default ``SIGTERM``) is sent to every rank before a planned stop (preemption,
    a graceful cancel, maintenance, a move); the ranks then have ``grace_s`` seconds (default
    and upper bound: the operator's, see ``SchedulerConfig``) to save a checkpoint, report it
    and exit before they are killed (Slurm ``--signal``, Kubernetes' termination grace period).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Annotated[str, Field(min_length=1, max_length=limits.MAX_PATH_BYTES)] | None = None
    interval_s: Annotated[int, Field(strict=True, ge=1, le=limits.MAX_INT)] | None = None
    signal: CheckpointSignal = "SIGTERM"
    grace_s: Annotated[int, Field(strict=True, ge=1, le=limits.MAX_INT)] | None = None


class Launch(StrEnum):
    """How the agents start a job's ranks."""

    PER_RANK = "per_rank"
    """One process per rank, with ``RANK``, ``LOCAL_RANK``... set (the default)."""
    PER_HOST = "per_host"
    """One process per host that starts the host's ranks itself (torchrun with
    ``--rdzv-backend=static``)."""


class PlacementHints(BaseModel):
    """The optional ``placement`` block (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required_tier: dict[Dim, ShortText] = Field(default_factory=dict)
    nvlink_dims: frozenset[Dim] = frozenset()
    max_leaves: Annotated[int, Field(strict=True, ge=1, le=limits.MAX_GPUS)] | None = None
    model: ModelShape | None = None
    volumes_gb: dict[Dim, Annotated[float, Field(ge=0)]] | None = None


class JobSpec(BaseModel):
    """A job as submitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=limits.MAX_NAME_CHARS)]
    gpus: Annotated[int, Field(strict=True, ge=1, le=limits.MAX_GPUS)]
    parallelism: Parallelism | None = None
    command: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    priority: Annotated[int, Field(strict=True, ge=-limits.MAX_INT, le=limits.MAX_INT)] = 0
    queue: Annotated[str, Field(min_length=1, max_length=limits.MAX_NAME_CHARS)] = "default"
    checkpoint: CheckpointSpec | None = None
    max_restarts: Count = 0
    time_limit_s: Annotated[int, Field(strict=True, ge=1, le=limits.MAX_INT)] | None = None
    placement: PlacementHints = Field(default_factory=PlacementHints)
    launch: Launch = Launch.PER_RANK
    preemptible: bool = False
    """The job accepts being preempted on short notice: it may run on spare hosts (and is
    preempted before other candidates)."""

    @field_validator("command")
    @classmethod
    def _command(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        return limits.check_command(command)

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        limits.check_env(env)
        return env

    @model_validator(mode="after")
    def _product(self) -> JobSpec:
        object.__setattr__(self, "parallelism", resolve_parallelism(self.parallelism, self.gpus))
        return self

    @property
    def par(self) -> Parallelism:
        """The parallelism (pure DP when the spec gives none)."""
        if self.parallelism is None:  # pragma: no cover - set by the validator
            raise AssertionError("parallelism is set by validation")
        return self.parallelism

    def to_request(self, excluded_hosts: Iterable[str] = ()) -> PlacementRequest:
        """The placement request of this job (without excluded hosts: built once per spec,
        see :attr:`request`)."""
        excluded = frozenset(excluded_hosts)
        if not excluded:
            return self.request
        return self._build_request(excluded)

    @cached_property
    def request(self) -> PlacementRequest:
        """The placement request of this job with no host excluded, built on first use and
        kept: a submitted spec is checked for placeability, then shaped by every scheduling
        cycle it waits through. (The spec is frozen; it must not be copied with
        ``model_copy(update=...)``, which would carry this over.)"""
        return self._build_request(frozenset())

    @cached_property
    def request_key(self) -> str:
        """:attr:`request` as canonical JSON: specs with equal keys place alike."""
        return self.request.model_dump_json()

    def _build_request(self, excluded: frozenset[str]) -> PlacementRequest:
        hints = self.placement
        return PlacementRequest(
            gpus=self.gpus,
            parallelism=self.par,
            model=hints.model,
            volumes_gb=hints.volumes_gb,
            required_tier=hints.required_tier,
            nvlink_dims=hints.nvlink_dims | {"tp"},
            max_leaves=hints.max_leaves,
            excluded_hosts=excluded,
        )


def job_spec_from_data(data: Any, *, source: str = "job spec") -> JobSpec:
    """Validate parsed data, turning every error into one line prefixed with ``source``."""
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{source}: expected a mapping at the top level", reason=ErrorReason.INVALID_JOB_SPEC
        )
    try:
        limits.check_spec_data(data, FLAG_KEYS)
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(
            f"{source}: {_first_error(exc)}", reason=ErrorReason.INVALID_JOB_SPEC
        ) from None
    except FirsthopError as exc:
        raise type(exc)(f"{source}: {exc.message}", reason=exc.reason) from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {err['msg']}{more}"
