"""Hosts a ``--busy wait`` campaign holds back from new jobs that would still run when it arrives.

The issue: "``--busy wait`` waits for the job to end (the placer stops putting new jobs there
whose time limit would overlap)". A draining host already takes no new job; this module covers
the campaign's hosts still ``WAITING``, so that new long jobs landing on them cannot hold the
campaign up indefinitely.

**Which campaigns.** Only ``RUNNING`` campaigns with ``--busy wait``: a ``PAUSED`` campaign
takes no host, so it holds none; a finished or aborted one holds none either. ``--busy
migrate`` campaigns move jobs out of their way and hold nothing. Running jobs are never
touched: a hold only closes hosts to the placement of *queued* jobs.

**Estimate of when the campaign reaches a host** (simple and deliberately early, so that the
campaign, not the new job, wins a close call):

- the campaign's ``WAITING`` hosts are ranked as the wave planner takes them first: idle hosts
  (no job now) before busy ones, then by name; a host of rank ``r`` is in wave
  ``k = r // B``, with ``B`` the cluster-wide budget in hosts (``--max-unavailable``);
- one wave is expected to last ``W`` seconds: the campaign's observed pace (seconds since it
  started, times ``B``, over hosts finished), capped by the action's timeout; before any host
  finished, the action's timeout;
- the host is reached ``max(0, k - 1) * W`` seconds from now: the next two waves are held
  from now. Hosts already out and the wait for running jobs are left out of the estimate,
  which only makes it earlier.

A queued job may use a held host only when its time limit is set and it would end by then
(``time_limit_s <= reach``); a job without a time limit may use none of the campaign's
``WAITING`` hosts. A job that fits nowhere else waits in the queue like any other (the placer
refuses it; nothing fails), and ``firsthop explain`` names the campaigns holding hosts.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from scheduler.core.campaign_records import BusyPolicy, Campaign, CampaignState, HostPhase
from scheduler.core.records import Job
from scheduler.core.waves import parse_budget

HELD_AHEAD_WAVES = 2
"""Waves held from now against every new job, whatever its time limit."""
REASON = "maintenance_reserved"
"""``explain`` reason of a job that would fit but for hosts held by campaigns."""


@dataclass(frozen=True, slots=True)
class Hold:
    """One campaign's held hosts, ordered by when it is expected to reach them.

    Attributes:
        campaign: the campaign's name.
        hosts: its ``WAITING`` hosts, earliest reached first.
        reach_s: per host, seconds from now until the campaign is expected to reach it
            (non-decreasing).
    """

    campaign: str
    hosts: tuple[str, ...]
    reach_s: tuple[float, ...]

    def closed_to(self, time_limit_s: float | None) -> int:
        """How many of :attr:`hosts` (a prefix) a job with this time limit may not use."""
        if time_limit_s is None:
            return len(self.hosts)
        return bisect_left(self.reach_s, time_limit_s)


class MaintenanceHolds:
    """The holds of every campaign at one instant, and the hosts they close to each job."""

    def __init__(self, holds: Iterable[Hold] = ()) -> None:
        self.holds = tuple(h for h in holds if h.hosts)
        self._memo: dict[tuple[int, ...], frozenset[str]] = {}

    def __bool__(self) -> bool:
        return bool(self.holds)

    def _cuts(self, job: Job) -> tuple[int, ...]:
        limit = job.spec.time_limit_s
        return tuple(h.closed_to(limit) for h in self.holds)

    def excluded(self, job: Job) -> frozenset[str]:
        """Hosts closed to ``job`` (the same object for jobs with the same cut-offs)."""
        if not self.holds:
            return frozenset()
        cuts = self._cuts(job)
        found = self._memo.get(cuts)
        if found is None:
            found = frozenset(
                host
                for hold, cut in zip(self.holds, cuts, strict=True)
                for host in hold.hosts[:cut]
            )
            self._memo[cuts] = found
        return found

    def campaigns_for(self, job: Job) -> dict[str, int]:
        """Per campaign holding hosts against ``job``, how many."""
        return {
            hold.campaign: cut for hold, cut in zip(self.holds, self._cuts(job), strict=True) if cut
        }


def hold_of(
    campaign: Campaign,
    at: datetime,
    *,
    cluster_hosts: int,
    host_jobs: Mapping[str, object],
) -> Hold | None:
    """The hosts ``campaign`` holds at ``at`` (see the module docstring), or ``None``."""
    spec = campaign.spec
    if campaign.state is not CampaignState.RUNNING or spec.busy is not BusyPolicy.WAIT:
        return None
    waiting = [h.host for h in campaign.hosts if h.phase is HostPhase.WAITING]
    if not waiting:
        return None
    budget = parse_budget(spec.max_unavailable).hosts(cluster_hosts)
    wave_s = spec.timeout_s
    finished = campaign.count(HostPhase.DONE, HostPhase.FAILED)
    if finished:
        began = max(campaign.created_at, spec.not_before or campaign.created_at)
        elapsed = max(0.0, (at - began).total_seconds())
        wave_s = min(wave_s, elapsed * budget / finished)
    ordered = sorted(waiting, key=lambda h: (bool(host_jobs.get(h)), h))
    reach = tuple(
        max(0, rank // budget - (HELD_AHEAD_WAVES - 1)) * wave_s for rank in range(len(ordered))
    )
    return Hold(spec.name, tuple(ordered), reach)


def holds_at(
    campaigns: Iterable[Campaign],
    at: datetime,
    *,
    cluster_hosts: int,
    host_jobs: Mapping[str, object],
) -> MaintenanceHolds:
    """The holds of every campaign at ``at``."""
    found = (
        hold_of(c, at, cluster_hosts=cluster_hosts, host_jobs=host_jobs)
        for c in sorted(campaigns, key=lambda c: c.name)
    )
    return MaintenanceHolds(h for h in found if h is not None)
