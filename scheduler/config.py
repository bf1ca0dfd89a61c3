"""The scheduler server's configuration, from flags, ``FIRSTHOP_*`` variables and a YAML file.

Precedence, highest first: values passed in code (the command-line flags), environment
variables (``FIRSTHOP_LISTEN``, ``FIRSTHOP_DB_URL``, nested with ``__`` as in
``FIRSTHOP_PLACEMENT__TIME_LIMIT_S``), the ``--config`` YAML file, then the defaults below.
Unknown keys are errors. Only :func:`load_config` reads the environment; everything else gets
a :class:`ServerConfig` from the composition root.

Pointing the scheduler at PostgreSQL: ``--db postgresql+psycopg://USER:PASS@HOST:5432/DB``
(or ``db_url:`` in the config file, or ``FIRSTHOP_DB_URL``); the schema is migrated at start.

Must not import grpc, generated protos, ``scheduler.core`` internals or ``agents``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from placement import PlacementParams
from topology.errors import InvalidInputError

_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("firsthop_config_file", default=None)

Positive = Annotated[float, Field(gt=0)]

AGENT_RECONNECT_SHARE = 0.2
"""An agent waits at most this share of the heartbeat timeout between reconnection attempts
(``agents.session.RECONNECT_SHARE_OF_TIMEOUT``, which this module may not import)."""
AGENT_SILENCE_INTERVALS = 3.0
"""An agent gives up on a stream that stays silent this many heartbeat intervals (a paused or
cut-off leader keeps it open; ``agents.transport.SILENCE_INTERVALS``)."""


class ServerConfig(BaseSettings):
    """Everything the composition root needs to build a scheduler server."""

    model_config = SettingsConfigDict(
        env_prefix="FIRSTHOP_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    listen: str = "127.0.0.1:50051"
    """``HOST:PORT`` to serve gRPC on; port 0 picks a free port (printed at start)."""
    db_url: str = "sqlite:///firsthop.db"
    """SQLAlchemy URL of the store: ``sqlite:///PATH``, ``postgresql+psycopg://...``, or
    ``memory://`` for a store that forgets everything on exit (tests and benchmarks)."""
    topology: Path | None = None
    """The cluster's topology file (required to serve)."""
    heartbeat_interval_s: Positive = 5.0
    """How often agents are told to send heartbeats."""
    heartbeat_timeout_s: Positive = 30.0
    """A node without a heartbeat for this long is LOST."""
    tick_interval_s: Positive = 1.0
    """Period of the scheduling tick (timeouts, time limits, retries of blocked jobs)."""
    placement_worker: bool = True
    """Compute the scheduling cycle's placements in a worker process, off the event loop that
    answers requests (``scheduler.core.proposals``); off, the cycle places inline."""
    placement_work_s: Positive = 0.5
    """Wall time the placement worker spends on one cycle's placements before handing back
    what it has (the first job is always placed)."""
    stop_grace_s: Annotated[float, Field(ge=0)] = 30.0
    """Grace period between SIGTERM and SIGKILL when ranks are stopped."""
    max_checkpoint_grace_s: Positive = 600.0
    """Upper bound of a job's ``checkpoint.grace_s`` (time between its checkpoint signal and
    SIGKILL on a planned stop)."""
    fence_after_s: Annotated[float, Field(ge=0)] | None = None
    """Agents that hear nothing from any scheduler for this long stop their ranks, so that two
    attempts of a job never run at once (0: never). At most the heartbeat timeout less one
    interval (the fenced ranks are gone before a LOST host's ranks are replaced). Default
    (unset): exactly that, ``heartbeat_timeout_s - heartbeat_interval_s``, when it rides out a
    scheduler outage of ``outage_tolerance_s`` (see :meth:`fence_after`); otherwise off, with
    a warning at start. With the defaults (5 s interval, 30 s timeout): 25 s."""
    outage_tolerance_s: Positive = 10.0
    """The scheduler outage (a restart, or a standby's takeover) that must stop no rank, from
    the agents' side: the automatic fence time must cover it plus the age of the last
    acknowledgement (one heartbeat interval; three when a paused leader's stream must time
    out first, if longer) and the agents' longest reconnection delay (a fifth of the heartbeat
    timeout). 10 s covers a cold restart (3.4 s measured) and a takeover
    from a leader whose lease expired (``lease_s`` 5 s + ``leader_poll_s`` 0.5 s + 0.6 s)."""
    spares_per_leaf: Annotated[int, Field(ge=0)] = 0
    """Idle healthy hosts kept in the spare pool of every leaf (designated by the scheduler,
    replenished as spares are used, lost or drained); 0: only operators' spares."""
    spares_per_pod: Annotated[int, Field(ge=0)] = 0
    """The same per pod (the leaves' spares count towards it)."""
    repair_preempt_above: Annotated[float, Field(ge=1)] | None = 1.10
    """An in-place repair preempts lower-priority jobs in the lost hosts' leaf or pod when the
    best free replacement costs more than this many times the job's cost before the failure
    (or none exists); None: never."""
    repair_in_place: bool = True
    """Repair a checkpointing job that loses hosts where it runs (swap only those hosts)
    instead of requeueing it; failures are blamed two heartbeat intervals after a rank's
    exit."""
    return_lost_nodes: bool = False
    """A LOST node whose agent returns goes back to READY by itself (default: DRAINED,
    until ``firsthopctl nodes resume`` runs a deep health check and returns it)."""
    health_check_timeout_s: Positive = 600.0
    """Longest wait for an agent's deep health check before a resume."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """Serve Prometheus metrics over HTTP on this port (0: any free port); None: no endpoint."""
    metrics_host: str = "127.0.0.1"
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 5.0
    """On SIGTERM, how long in-flight RPCs may take before the server closes them."""
    gc_full_every: Annotated[int, Field(ge=0)] = 1000
    """The server process runs a full garbage collection once per this many collections of
    generation 1, after freezing what it loaded (:mod:`scheduler.runtime.collector`); 0
    keeps CPython's defaults (10, nothing frozen)."""
    max_batch: Annotated[int, Field(ge=1)] = 512
    """Most events applied and committed in one store transaction (group commit)."""
    job_retention_s: Annotated[float, Field(gt=0, le=10 * 365 * 86400)] = 3600.0
    """How long a finished job stays in memory (at most ten years); after that it is read from
    the store (so memory and restart time do not grow with the history)."""
    placement: PlacementParams = PlacementParams(time_limit_s=0.5)
    """Placement solver limits for each job the scheduler places."""
    tls_cert: Path | None = None
    """The server's certificate (PEM); with ``tls_key``, users' port speaks TLS."""
    tls_key: Path | None = None
    client_ca: Path | None = None
    """The CA that signed agents' certificates: the agents' port requires one of them."""
    agent_listen: str | None = None
    """``HOST:PORT`` of the agents' port (mutual TLS; needs ``tls_*`` and ``client_ca``)."""
    insecure: bool = False
    """Allow listening without TLS on a non-loopback address (logs a warning)."""
    max_message_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    """Largest request message (gRPC refuses larger ones: RESOURCE_EXHAUSTED)."""
    bootstrap_admin_file: Path | None = None
    """When no admin has a live token, mint one for user ``admin`` into this new file (0600)."""
    max_concurrent_rpcs: Annotated[int, Field(ge=1)] = 16384
    """Most RPCs served at once, agents' streams included (one per host: keep it well above
    the host count); more answer RESOURCE_EXHAUSTED."""
    leader_election: bool = True
    """On PostgreSQL, take part in leader election (``scheduler.store.lease``): serve only
    while holding the leader lease; wait as a standby otherwise. Ignored for SQLite and
    ``memory://`` (one scheduler per store)."""
    lease_s: Positive = 5.0
    """A leader that has not renewed its lease for this long is deposed by a standby."""
    leader_poll_s: Positive = 0.5
    """How often a standby tries to take the lease."""
    advertise_address: str | None = None
    """``HOST:PORT`` a standby tells clients to use for this scheduler when it leads
    (default: the bound address)."""
    forecast_budget_s: Annotated[float, Field(gt=0, le=600)] = 3.0
    """Wall-clock seconds one start-time forecast (``firsthopctl cluster forecast``, the
    estimate in ``firsthop explain``) may simulate for; beyond, it answers what it found."""
    forecast_cache_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    """How long a forecast is reused before the next call simulates again."""
    forecast_horizon_s: Annotated[float, Field(gt=0, le=365 * 86400)] = 30 * 86400.0
    """How far ahead a forecast simulates (simulated seconds)."""

    def fence_needed_s(self) -> float:
        """The shortest fence time that rides out an outage of ``outage_tolerance_s``: the
        outage plus the age of the agents' last acknowledgement (one interval), or the time
        agents take to give up on a silent leader's open stream (three intervals) if longer,
        plus their longest reconnection delay (``AGENT_RECONNECT_SHARE`` of the timeout)."""
        interval = self.heartbeat_interval_s
        silent = max(self.outage_tolerance_s + interval, AGENT_SILENCE_INTERVALS * interval)
        return silent + AGENT_RECONNECT_SHARE * self.heartbeat_timeout_s

    def fence_after(self) -> float:
        """The fence time agents are given: ``fence_after_s`` when set; else the longest one
        allowed (timeout less one interval) when that is at least :meth:`fence_needed_s`,
        else 0 (off; :meth:`fence_warning` says why)."""
        if self.fence_after_s is not None:
            return self.fence_after_s
        longest = self.heartbeat_timeout_s - self.heartbeat_interval_s
        return longest if longest >= self.fence_needed_s() else 0.0

    def fence_warning(self) -> str | None:
        """What an operator should know about the fence time at start (``None``: nothing)."""
        fence, needed = self.fence_after(), self.fence_needed_s()
        if fence == 0:
            interval = self.heartbeat_interval_s
            silent = max(self.outage_tolerance_s + interval, AGENT_SILENCE_INTERVALS * interval)
            shortest = (interval + silent) / (1 - AGENT_RECONNECT_SHARE)
            why = (
                "fence_after_s is 0"
                if self.fence_after_s == 0
                else (
                    f"the longest fence time allowed ({self.heartbeat_timeout_s:g} - "
                    f"{self.heartbeat_interval_s:g} s) cannot ride out a "
                    f"{self.outage_tolerance_s:g} s outage (outage_tolerance_s) with "
                    f"{needed - self.outage_tolerance_s:g} s of heartbeat and reconnection slack; "
                    f"a heartbeat_timeout_s of {shortest:.3g} s or more would"
                )
            )
            return (
                f"fencing is off ({why}): ranks on a host cut off from the scheduler keep "
                "running while the job is repaired elsewhere"
            )
        if fence < needed:
            return (
                f"fence_after_s ({fence:g} s) is shorter than {needed:g} s: a scheduler outage "
                f"of {self.outage_tolerance_s:g} s (outage_tolerance_s: a restart or failover) "
                "may stop every running rank"
            )
        return None

    @model_validator(mode="after")
    def _timeout_covers_heartbeats(self) -> ServerConfig:
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s}) must exceed "
                f"heartbeat_interval_s ({self.heartbeat_interval_s})"
            )
        fence = self.fence_after_s
        if fence and fence > self.heartbeat_timeout_s - self.heartbeat_interval_s + 1e-9:
            raise ValueError(
                f"fence_after_s ({fence}) must be at most heartbeat_timeout_s - "
                f"heartbeat_interval_s ({self.heartbeat_timeout_s - self.heartbeat_interval_s}): "
                "a LOST host's ranks must be fenced before they are replaced"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del dotenv_settings, file_secret_settings  # no .env files or secret dirs
        return (init_settings, env_settings, _YamlFileSource(settings_cls))


class _YamlFileSource(PydanticBaseSettingsSource):
    """The data of the ``--config`` file being loaded (set by :func:`load_config`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        data = _FILE_DATA.get() or {}
        return data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file (``InvalidInputError`` if unreadable or not one)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror}", reason="unreadable_file"
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(
            f"{path}: not valid YAML: {first}", reason="invalid_config"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: expected a mapping", reason="invalid_config")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


@contextmanager
def _file_data(data: dict[str, Any]) -> Iterator[None]:
    token = _FILE_DATA.set(data)
    try:
        yield
    finally:
        _FILE_DATA.reset(token)


def load_config(config_file: Path | None = None, **overrides: Any) -> ServerConfig:
    """Build the configuration (precedence in the module docstring).

    Args:
        config_file: Optional YAML file with any of the :class:`ServerConfig` fields.
        overrides: Values from command-line flags; ``None`` values are left out, so an unset
            flag does not hide the environment or the file.

    Raises:
        InvalidInputError: reason ``invalid_config`` with the first problem, or
            ``unreadable_file``.
    """
    data = read_config_file(config_file) if config_file is not None else {}
    given = {key: value for key, value in overrides.items() if value is not None}
    source = str(config_file) if config_file is not None else "configuration"
    try:
        with _file_data(data):
            return ServerConfig(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        raise InvalidInputError(f"{source}: {loc}: {err['msg']}", reason="invalid_config") from None
