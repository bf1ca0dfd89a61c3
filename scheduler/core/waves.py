"""Rolling-maintenance pacing: which hosts a campaign may take out of service next.

A campaign walks its hosts through ``WAITING -> DRAINING -> IN_MAINTENANCE -> CHECKING ->
DONE | FAILED``. This module is the pure part that decides, at any moment, which ``WAITING``
hosts start draining now. It holds no state: the campaign machine calls :func:`plan_wave`
after every change and applies the answer.

**Budgets.** Capacity out of service never exceeds the cluster-wide budget
(``--max-unavailable N|P%``) nor any per-domain budget (``--per-domain leaf=1,pod=10%``). Out of
service counts every host that cannot take new work: the campaign's own hosts between
``DRAINING`` and ``CHECKING``, and hosts out for any other reason (lost, drained, failed). So a
fleet already short of capacity slows the campaign down, as a Kubernetes disruption budget
does. A percentage is of the hosts in scope (the cluster, or that domain), rounded down, and
never below one host, so that every campaign can make progress.

**Order** (the issue's pacing rules, in priority):

1. Idle hosts first; among them, whole idle leaves first (a leaf whose every remaining host is
   idle is taken at once when the budget holds it, so the leaf comes back whole and large jobs
   can use it again), the largest such leaf first; then idle hosts of leaves that are broken
   anyway; only then single hosts of whole idle leaves.
2. Busy hosts grouped so running jobs are disturbed as few times as possible: hosts that share
   a job form one unit (hosts linked through jobs, transitively), and a unit is taken in one
   wave when the budget allows. Smaller units first (they fit sooner), then by name.
3. A busy unit that no wave could hold (larger than the budget, or more hosts in one domain
   than its per-domain budget) is taken in budget-sized chunks, the hosts of each job together
   as far as they go.

A busy unit that would fit the budget but not the budget left now waits (nothing behind it
jumps the queue among busy units), so big jobs are not starved by a stream of small ones;
idle hosts still flow around it, because taking them disturbs no one.

Must not import anything outside the standard library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from topology.errors import InvalidInputError

_COUNT = re.compile(r"^\s*(\d+)\s*(%?)\s*$")


@dataclass(frozen=True, slots=True)
class Budget:
    """A number of hosts or a percentage of the hosts in scope."""

    value: int
    percent: bool = False

    def hosts(self, scope: int) -> int:
        """The budget in hosts for a scope of ``scope`` hosts (at least 1 when scope > 0)."""
        if scope <= 0:
            return 0
        raw = math.floor(scope * self.value / 100) if self.percent else self.value
        return max(1, min(raw, scope))

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def parse_budget(text: str) -> Budget:
    """``"4"`` or ``"5%"``.

    Raises:
        InvalidInputError: ``invalid_budget``.
    """
    match = _COUNT.match(text)
    if match is None:
        raise InvalidInputError(
            f"a budget is a host count or a percentage, got {text[:40]!r}", reason="invalid_budget"
        )
    value, percent = int(match.group(1)), bool(match.group(2))
    if value < 1 or (percent and value > 100):
        raise InvalidInputError(
            f"a budget must be at least 1 (and at most 100%), got {text[:40]!r}",
            reason="invalid_budget",
        )
    return Budget(value, percent)


def parse_per_domain(text: str, tiers: Sequence[str]) -> dict[str, Budget]:
    """``"leaf=1,pod=10%"`` -> budget per tier name (tiers must exist).

    Raises:
        InvalidInputError: ``invalid_budget`` or ``unknown_tier``.
    """
    out: dict[str, Budget] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tier, sep, value = part.partition("=")
        tier = tier.strip()
        if not sep:
            raise InvalidInputError(
                f"expected TIER=N or TIER=P%, got {part[:40]!r}", reason="invalid_budget"
            )
        if tier not in tiers:
            raise InvalidInputError(
                f"unknown tier {tier[:40]!r} (tiers: {', '.join(tiers)})", reason="unknown_tier"
            )
        out[tier] = parse_budget(value)
    return out


@dataclass(frozen=True, slots=True)
class Fleet:
    """What the planner needs to know of the cluster.

    Attributes:
        domains: per host of the whole cluster (not only the campaign's), its domain at each
            switch tier, nearest tier first (``{"leaf": ..., "pod": ...}``); the number of
            hosts here is the scope of the cluster-wide budget.
        out_of_service: hosts that cannot take new work right now for any reason, the
            campaign's own in-progress hosts included.
        jobs: per host, the ids of the jobs running there (absent or empty: idle).
    """

    domains: Mapping[str, Mapping[str, str]]
    out_of_service: frozenset[str] = frozenset()
    jobs: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def busy(self, host: str) -> bool:
        """Whether any job runs on ``host``."""
        return bool(self.jobs.get(host))


@dataclass(frozen=True, slots=True)
class Wave:
    """The planner's answer: hosts to start draining now, and why others wait."""

    hosts: tuple[str, ...]
    waiting_for_budget: int = 0
    """WAITING hosts that the budget holds back now."""


def plan_wave(
    waiting: Iterable[str],
    fleet: Fleet,
    *,
    max_unavailable: Budget,
    per_domain: Mapping[str, Budget] | None = None,
) -> Wave:
    """The ``WAITING`` hosts to take out next (see the module docstring)."""
    per_domain = dict(per_domain or {})
    remaining = sorted(set(waiting))
    left = _Room(fleet, max_unavailable, per_domain)
    chosen: list[str] = []

    idle = [h for h in remaining if not fleet.busy(h)]
    whole, singles = _idle_units(idle, remaining, fleet)
    deferred: list[str] = []
    for unit in whole:
        if left.fits(unit):
            left.take(unit)
            chosen += unit
        else:
            deferred += unit
    for host in singles + deferred:  # broken leaves before whole ones
        if left.fits([host]):
            left.take([host])
            chosen.append(host)

    empty = _Room(Fleet(fleet.domains), max_unavailable, per_domain)
    for unit in _busy_units([h for h in remaining if fleet.busy(h)], fleet):
        if empty.fits(unit):
            if not left.fits(unit):
                break
            left.take(unit)
            chosen += unit
            continue
        # Too big for any one wave: take what fits now, the hosts of each job together.
        for host in unit:
            if left.fits([host]):
                left.take([host])
                chosen.append(host)
        break
    return Wave(tuple(chosen), len(remaining) - len(chosen))


class _Room:
    """Budget left, cluster-wide and per domain."""

    def __init__(self, fleet: Fleet, total: Budget, per_domain: Mapping[str, Budget]) -> None:
        self._fleet = fleet
        self._tiers = tuple(per_domain)
        self._left = total.hosts(len(fleet.domains)) - len(fleet.out_of_service)
        self._domain_left: dict[tuple[str, str], int] = {}
        sizes: dict[tuple[str, str], int] = {}
        for where in fleet.domains.values():
            for tier in per_domain:
                key = (tier, where.get(tier, ""))
                sizes[key] = sizes.get(key, 0) + 1
        for key, size in sizes.items():
            self._domain_left[key] = per_domain[key[0]].hosts(size)
        for host in fleet.out_of_service:
            for key in self._keys(host):
                if key in self._domain_left:
                    self._domain_left[key] -= 1

    def _keys(self, host: str) -> list[tuple[str, str]]:
        where = self._fleet.domains.get(host, {})
        return [(tier, where.get(tier, "")) for tier in self._tiers]

    def fits(self, hosts: Sequence[str]) -> bool:
        if len(hosts) > self._left:
            return False
        need: dict[tuple[str, str], int] = {}
        for host in hosts:
            for key in self._keys(host):
                need[key] = need.get(key, 0) + 1
        return all(self._domain_left.get(k, 0) >= n for k, n in need.items())

    def take(self, hosts: Sequence[str]) -> None:
        self._left -= len(hosts)
        for host in hosts:
            for key in self._keys(host):
                self._domain_left[key] -= 1


def _leaf_of(fleet: Fleet, host: str) -> str:
    where = fleet.domains.get(host, {})
    return next(iter(where.values()), "") if where else ""


def _idle_units(
    idle: list[str], waiting: list[str], fleet: Fleet
) -> tuple[list[list[str]], list[str]]:
    """Whole idle leaves (largest first), and the other idle hosts."""
    by_leaf: dict[str, list[str]] = {}
    for host in waiting:
        by_leaf.setdefault(_leaf_of(fleet, host), []).append(host)
    idle_set = set(idle)
    whole = [hosts for hosts in by_leaf.values() if all(h in idle_set for h in hosts)]
    whole.sort(key=lambda hosts: (-len(hosts), hosts[0]))
    in_whole = {h for hosts in whole for h in hosts}
    return whole, [h for h in idle if h not in in_whole]


def _busy_units(busy: list[str], fleet: Fleet) -> list[list[str]]:
    """Hosts linked through shared jobs (union-find), smallest unit first."""
    parent = {h: h for h in busy}

    def find(h: str) -> str:
        while parent[h] != h:
            parent[h] = parent[parent[h]]
            h = parent[h]
        return h

    first_host: dict[str, str] = {}
    for host in busy:
        for job in sorted(fleet.jobs.get(host, ())):
            other = first_host.setdefault(job, host)
            a, b = find(host), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    units: dict[str, list[str]] = {}
    for host in busy:
        units.setdefault(find(host), []).append(host)
    ordered = [
        sorted(hosts, key=lambda h: (sorted(fleet.jobs.get(h, ())), h)) for hosts in units.values()
    ]
    ordered.sort(key=lambda hosts: (len(hosts), hosts[0]))
    return ordered
