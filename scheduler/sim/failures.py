"""Failure schedules: when which hosts fail, of what, and for how long.

``llama3`` draws failures from the Llama 3 405B mix (Meta, "The Llama 3 Herd of Models",
arXiv:2407.21783, section 3.3.4, Table 5; transcribed in ``shared/data/reliability``): 419
unexpected interruptions on 2,048 hosts in 54 days, i.e. 3.79 per 1,000 host-days, by root
cause. Each cause maps to a kind of event:

========================  =========  ================================================
cause (count of 419)      kind       effect in the simulation
========================  =========  ================================================
GPU, HBM3, SRAM, GSP,     hardware   the host's agent reports FAILED: the core drains
SDC, thermal (268)                   it and its jobs take the failure path; back after
host parts (21)                      ``gpu_repair_h`` (resume + healthy heartbeat)
unplanned maintenance     hardware   the same, back after ``maintenance_repair_h``
(32)
network switch/cable      network    ``leaf_share`` of them take every host of one leaf
(35)                                 switch down, the rest one host; ``network_repair_h``
software, dependency,     software   a rank of the job on the host exits non-zero (the
NCCL watchdog (63)                   host stays healthy; nothing to repair)
========================  =========  ================================================

Failures are a Poisson process per host at those rates (times ``FailureModel.scale``), drawn
once per run from the seed, so every policy sees the same failures at the same times; a host
already down when its next failure comes is skipped. The 47 planned interruptions of the
Llama 3 window (maintenance the team scheduled) are not injected.

A failure FILE (``--failures FILE``) is a CSV with header ``time_s,kind,host,repair_s``
(``kind``: hardware, network, software; ``host``: a host name, or ``leaf:NAME`` for a whole
leaf switch).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from scheduler.sim.config import FailureModel
from topology.errors import InvalidInputError
from topology.index import TopologyIndex

DAY = 86400.0
LLAMA3_HOST_DAYS = 2048 * 54
"""Host-days of the Llama 3 window (16,384 GPUs, 8 per host, 54 days)."""
LLAMA3_COUNTS = {"gpu": 268, "host": 21, "maintenance": 32, "network": 35, "software": 63}
"""Unexpected interruptions per cause group (Table 5 counts, summed; 419 in all)."""


class FailureKind(StrEnum):
    """What a failure does to its hosts."""

    HARDWARE = "hardware"
    NETWORK = "network"
    SOFTWARE = "software"


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """Hosts failing at ``at_s`` for ``repair_s`` seconds (software: no repair)."""

    at_s: float
    kind: FailureKind
    hosts: tuple[int, ...]
    repair_s: float
    cause: str


def llama3_rate_per_host_s(scale: float = 1.0) -> float:
    """Unexpected interruptions per host-second in the Llama 3 window."""
    return scale * sum(LLAMA3_COUNTS.values()) / (LLAMA3_HOST_DAYS * DAY)


def llama3_schedule(
    index: TopologyIndex, horizon_s: float, model: FailureModel, seed: int
) -> list[FailureEvent]:
    """Draw the Llama 3 mix for every host over ``horizon_s`` (module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[1])
    hosts = index.num_hosts
    per_host_s = {
        cause: model.scale * count / (LLAMA3_HOST_DAYS * DAY)
        for cause, count in LLAMA3_COUNTS.items()
    }
    events: list[FailureEvent] = []
    leaves = index.ancestors[:, 1] if index.cluster_level > 1 else np.zeros(hosts, np.int64)
    for cause, rate in sorted(per_host_s.items()):
        total = rate * hosts * horizon_s
        count = int(rng.poisson(total)) if total > 0 else 0
        times = np.sort(rng.uniform(0.0, horizon_s, size=count))
        victims = rng.integers(0, hosts, size=count)
        whole_leaf = rng.uniform(size=count) < model.leaf_share
        for at, host, leaf_wide in zip(
            times.tolist(), victims.tolist(), whole_leaf.tolist(), strict=True
        ):
            events.append(
                _event(
                    index=index,
                    leaves=leaves,
                    cause=cause,
                    at=at,
                    host=int(host),
                    leaf_wide=leaf_wide,
                    model=model,
                )
            )
    events.sort(key=lambda e: (e.at_s, e.hosts))
    return events


def _event(
    *,
    index: TopologyIndex,
    leaves: np.ndarray,
    cause: str,
    at: float,
    host: int,
    leaf_wide: bool,
    model: FailureModel,
) -> FailureEvent:
    if cause == "software":
        return FailureEvent(at, FailureKind.SOFTWARE, (host,), model.software_restart_s, cause)
    if cause == "network":
        hosts: tuple[int, ...] = (host,)
        if leaf_wide:
            hosts = tuple(np.flatnonzero(leaves == leaves[host]).tolist())
        return FailureEvent(at, FailureKind.NETWORK, hosts, model.network_repair_h * 3600, cause)
    hours = model.maintenance_repair_h if cause == "maintenance" else model.gpu_repair_h
    return FailureEvent(at, FailureKind.HARDWARE, (host,), hours * 3600, cause)


def load_schedule(path: Path, index: TopologyIndex) -> list[FailureEvent]:
    """A failure schedule from a CSV file (module docstring).

    Raises:
        InvalidInputError: ``invalid_failures`` for a bad row, ``unreadable_file``.
    """
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}", reason="unreadable_file") from None
    events: list[FailureEvent] = []
    for n, row in enumerate(rows, start=2):
        try:
            at = float(row["time_s"])
            kind = FailureKind(row["kind"].strip())
            target = row["host"].strip()
            repair = float(row["repair_s"])
            if target.startswith("leaf:"):
                leaf = index.domain_id(1, target[5:])
                hosts = tuple(index.hosts_under(1, leaf).tolist())
            else:
                hosts = (index.host_id(target),)
        except (KeyError, ValueError, AttributeError, InvalidInputError) as exc:
            raise InvalidInputError(
                f"{path}:{n}: bad failure row ({exc}); columns are time_s,kind,host,repair_s",
                reason="invalid_failures",
            ) from None
        if at < 0 or repair < 0:
            raise InvalidInputError(
                f"{path}:{n}: time_s and repair_s must be >= 0", reason="invalid_failures"
            )
        events.append(FailureEvent(at, kind, hosts, repair, kind.value))
    events.sort(key=lambda e: (e.at_s, e.hosts))
    return events
