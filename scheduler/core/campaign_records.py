"""Maintenance campaign records: what the store keeps of a rolling maintenance campaign.

A campaign (``firsthopctl maintenance start``) walks a set of hosts through
``WAITING -> DRAINING -> IN_MAINTENANCE -> CHECKING -> DONE | FAILED``, paced by
:mod:`scheduler.core.waves`; :mod:`scheduler.core.campaigns` is the state machine. The records
are frozen: a change is a new record with ``version`` one higher (the store's optimistic
check, as for jobs and nodes).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class CampaignState(StrEnum):
    """Where a campaign is (the issue's names)."""

    PENDING = "PENDING"
    """Created, waiting for ``--not-before``."""
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    """No new hosts are taken; hosts already out finish (operator pause or max failures)."""
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    """Every host finished and some failed, or the deadline passed with hosts left."""
    ABORTED = "ABORTED"


TERMINAL_CAMPAIGN_STATES = frozenset(
    {CampaignState.SUCCEEDED, CampaignState.FAILED, CampaignState.ABORTED}
)


class HostPhase(StrEnum):
    """Where one host of a campaign is."""

    WAITING = "WAITING"
    DRAINING = "DRAINING"
    """Taking no new jobs; waiting for its running jobs to end."""
    IN_MAINTENANCE = "IN_MAINTENANCE"
    """The action runs (or, with ``--external``, the host is handed over)."""
    CHECKING = "CHECKING"
    """The health check runs before the host returns to service."""
    DONE = "DONE"
    FAILED = "FAILED"
    """The action or the health check failed; the host stays drained with the reason."""


IN_FLIGHT_PHASES = frozenset({HostPhase.DRAINING, HostPhase.IN_MAINTENANCE, HostPhase.CHECKING})


class BusyPolicy(StrEnum):
    """What to do with jobs running on a host the campaign wants (``--busy``)."""

    WAIT = "wait"
    MIGRATE = "migrate"


class HealthCheckDepth(StrEnum):
    """``--health-check``."""

    FAST = "fast"
    DEEP = "deep"


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """What the operator asked for (validated by the core when the campaign starts).

    Attributes:
        name: the campaign's name (letters, digits, ``.``, ``_``, ``-``).
        selector: ``all``, a comma list of hosts, a domain name, or ``label=value``.
        max_unavailable: ``N`` or ``P%`` (cluster-wide budget).
        per_domain: ``leaf=1,pod=10%`` (tier budgets; empty: none).
        busy: wait for jobs, or move them.
        force: allow stopping a job without a fresh checkpoint.
        health_check: depth of the check before a host returns to service.
        max_failures: failed hosts that pause the campaign (None: never).
        not_before: earliest start.
        deadline: no host is taken after this instant.
        command: the action's argv (empty with ``external``).
        external: hand hosts over to the operator's tooling instead of running a command.
        timeout_s: the action's time limit on each host.
    """

    name: str
    selector: str
    max_unavailable: str = "1"
    per_domain: str = ""
    busy: BusyPolicy = BusyPolicy.WAIT
    force: bool = False
    health_check: HealthCheckDepth = HealthCheckDepth.FAST
    max_failures: int | None = None
    not_before: datetime | None = None
    deadline: datetime | None = None
    command: tuple[str, ...] = ()
    external: bool = False
    timeout_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class CampaignHost:
    """One host of a campaign.

    Attributes:
        host: the host's name.
        phase: where it is.
        reason: why it waits or failed (stable prefix, then detail).
        attempts: times its action was started (a retry after ``resume`` is one more).
        since: when it entered ``phase``.
        output: the tail of the action's captured output (last attempt).
    """

    host: str
    phase: HostPhase = HostPhase.WAITING
    reason: str = ""
    attempts: int = 0
    since: datetime | None = None
    output: str = ""


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign and its hosts (in the order they were resolved, by name)."""

    spec: CampaignSpec
    state: CampaignState
    created_at: datetime
    updated_at: datetime
    hosts: tuple[CampaignHost, ...]
    reason: str = ""
    """Why it is paused, failed or aborted."""
    jobs_waited: tuple[str, ...] = ()
    """Jobs whose end a draining host waited for."""
    jobs_moved: tuple[str, ...] = ()
    """Jobs moved off the campaign's hosts (``--busy migrate``): their ranks there stopped
    and restarted elsewhere from a checkpoint (or, with ``--force``, without one)."""
    moving: tuple[str, ...] = ()
    """Jobs asked to checkpoint and move whose ranks have not all stopped yet."""
    gpu_hours_lost: float = 0.0
    """GPU-hours of work lost to the campaign (jobs stopped without a fresh checkpoint)."""
    version: int = 0

    @property
    def name(self) -> str:
        """The campaign's name."""
        return self.spec.name

    def host(self, name: str) -> CampaignHost | None:
        """The entry of ``name``, or ``None``."""
        for entry in self.hosts:
            if entry.host == name:
                return entry
        return None

    def count(self, *phases: HostPhase) -> int:
        """Hosts in any of ``phases``."""
        return sum(1 for h in self.hosts if h.phase in phases)
