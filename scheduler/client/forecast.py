"""What a client sees of start-time forecasts (``firsthopctl cluster forecast``, the estimate
in ``firsthop explain``), read from the wire (``StartEstimate``, ``ForecastInfo``,
``ForecastClusterResponse``), and their stable JSON form.

The server's encoder is :mod:`scheduler.api.forecast`. The JSON keys here are a contract
scripts rely on: an estimate has ``job_id``, ``user``, ``queue``, ``gpus``, ``start`` (ISO 8601
UTC or ``null``), ``wait_s`` (seconds from ``made_at`` or ``null``), ``hosts``, ``reason``
(``beyond_horizon``, ``budget_exhausted`` or empty), ``assumed_time_limit`` and
``position``; a forecast has ``made_at``, ``horizon_s``, ``simulated_until``, ``complete``,
``compute_s``, ``default_time_limit_s``, ``running_without_limit``, ``cached`` and ``age_s``.

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api.spec_serde import get_time, require_time


@dataclass(frozen=True, slots=True)
class StartEstimateView:
    """When one waiting job is expected to start (``StartEstimate`` in jobs.proto)."""

    job_id: str
    user: str
    queue: str
    gpus: int
    start: datetime | None
    wait_s: float | None
    hosts: tuple[str, ...]
    reason: str
    assumed_time_limit: bool
    position: int


@dataclass(frozen=True, slots=True)
class ForecastInfoView:
    """How a forecast was made (``ForecastInfo`` in jobs.proto)."""

    made_at: datetime
    horizon_s: float
    simulated_until: datetime
    complete: bool
    compute_s: float
    default_time_limit_s: float
    running_without_limit: int
    cached: bool
    age_s: float


@dataclass(frozen=True, slots=True)
class ForecastView:
    """``firsthopctl cluster forecast``: estimates in the forecast's order."""

    info: ForecastInfoView
    jobs: tuple[StartEstimateView, ...]
    waiting_jobs: int
    truncated: bool


def start_estimate_from_proto(msg: jobs_pb2.StartEstimate) -> StartEstimateView:
    """One estimate."""
    start = get_time(msg, "start")
    return StartEstimateView(
        job_id=msg.job_id,
        user=msg.user,
        queue=msg.queue,
        gpus=msg.gpus,
        start=start,
        wait_s=msg.wait_s if start is not None else None,
        hosts=tuple(msg.hosts),
        reason=msg.reason,
        assumed_time_limit=msg.assumed_time_limit,
        position=msg.position,
    )


def forecast_info_from_proto(msg: jobs_pb2.ForecastInfo) -> ForecastInfoView:
    """How a forecast was made."""
    return ForecastInfoView(
        made_at=require_time(msg, "made_at", "forecast"),
        horizon_s=msg.horizon_s,
        simulated_until=require_time(msg, "simulated_until", "forecast"),
        complete=msg.complete,
        compute_s=msg.compute_s,
        default_time_limit_s=msg.default_time_limit_s,
        running_without_limit=msg.running_without_limit,
        cached=msg.cached,
        age_s=msg.age_s,
    )


def forecast_from_proto(msg: admin_pb2.ForecastClusterResponse) -> ForecastView:
    """A cluster forecast."""
    return ForecastView(
        info=forecast_info_from_proto(msg.forecast),
        jobs=tuple(start_estimate_from_proto(e) for e in msg.jobs),
        waiting_jobs=msg.waiting_jobs,
        truncated=msg.truncated,
    )


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def estimate_dict(view: StartEstimateView) -> dict[str, Any]:
    """An estimate for JSON (module docstring)."""
    return {
        "job_id": view.job_id,
        "user": view.user,
        "queue": view.queue,
        "gpus": view.gpus,
        "start": _iso(view.start),
        "wait_s": view.wait_s,
        "hosts": list(view.hosts),
        "reason": view.reason,
        "assumed_time_limit": view.assumed_time_limit,
        "position": view.position,
    }


def forecast_info_dict(view: ForecastInfoView) -> dict[str, Any]:
    """How a forecast was made, for JSON (module docstring)."""
    return {
        "made_at": _iso(view.made_at),
        "horizon_s": view.horizon_s,
        "simulated_until": _iso(view.simulated_until),
        "complete": view.complete,
        "compute_s": view.compute_s,
        "default_time_limit_s": view.default_time_limit_s,
        "running_without_limit": view.running_without_limit,
        "cached": view.cached,
        "age_s": view.age_s,
    }


def forecast_dict(view: ForecastView) -> dict[str, Any]:
    """``firsthopctl cluster forecast --output json``: ``forecast``, ``jobs``,
    ``waiting_jobs``, ``truncated``."""
    return {
        "forecast": forecast_info_dict(view.info),
        "jobs": [estimate_dict(e) for e in view.jobs],
        "waiting_jobs": view.waiting_jobs,
        "truncated": view.truncated,
    }


def estimate_line(view: StartEstimateView, info: ForecastInfoView) -> str:
    """One line for people: when, in how long, where, and what it assumes."""
    if view.start is None:
        until = info.simulated_until.strftime("%Y-%m-%d %H:%M:%S UTC")
        if view.reason == "budget_exhausted":
            return f"not before {until} (the forecast's compute budget ran out there)"
        return f"not within the forecast's horizon (by {until})"
    at = view.start.strftime("%Y-%m-%d %H:%M:%S UTC")
    text = f"{at} (in {duration(view.wait_s or 0.0)})"
    if view.hosts:
        text += f" on {len(view.hosts)} host(s)"
    if view.assumed_time_limit:
        text += f", assuming it runs {duration(info.default_time_limit_s)} (no time limit)"
    return text


def duration(seconds: float) -> str:
    """A short human duration (``45s``, ``12m``, ``3.5h``, ``2.0d``)."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
