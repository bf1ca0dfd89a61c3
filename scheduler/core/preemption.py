"""Preemption: which lower-priority jobs to stop so that a blocked job can be placed.

Candidates are allocated jobs the blocked job outranks (:func:`~scheduler.core.queueing.
may_preempt`) that are not already being preempted. Each has a *lost work*: GPU-seconds since
its last checkpoint (or its start; zero if it has not started), so a job that checkpointed
recently is cheap to preempt.

Victims are chosen per *scope*: the whole cluster and every switch domain (leaf, pod, ...)
whose free plus preemptible GPUs could hold the job. In a scope, candidates whose hosts all lie
inside it are taken cheapest first until the counts allow the job; the placer then places the
job on the scope's free GPUs plus the victims' (taking more victims if it fails), and victims
whose GPUs the placement does not use are dropped again. Scopes are tried in order of their
estimated lost work, nearer tiers first on ties, within a budget of placer calls. The plan with
the least lost work wins; ties go to the cheaper placement (communication cost), then to fewer
victims. So among equally cheap victims the scheduler frees a compact, well-connected set.
Jobs that accepted short notice (``preemptible``, the only ones on spare hosts) go first: a
plan with fewer other victims beats any plan with more, whatever their lost work.

GPUs of jobs already being preempted and of fences count as free here (they are on their way).

**For an in-place repair** (:func:`plan_repair_preemption`): the job being repaired is not
queued; it needs a few hosts near the ones it lost. Scopes are the leaf, then the pod, of every
vacated host (never the whole cluster); candidates are jobs it outranks that hold a host in the
scope, plus ``preemptible`` jobs on spare hosts (spares exist for repairs), cheapest first as
above. Victims are added until the partial re-placement on the freed GPUs is acceptable to the
caller (cheap enough); unused victims are dropped; the least lost work wins as above.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from placement import Placement, PlacementFailure, Snapshot
from placement.replace import Replacement, ReplaceMethod
from scheduler.core.capacity import FreeCapacity, placement_gpu_ids
from scheduler.core.queueing import may_preempt
from scheduler.core.records import Job
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState
from topology.index import BoolArray, IntArray

PlaceFn = Callable[[Snapshot, Job], Placement | PlacementFailure]

ReplaceFn = Callable[[BoolArray], Replacement | PlacementFailure | None]
"""The repair's partial re-placement on a given busy mask."""

PREEMPTIBLE_STATES = frozenset({JobState.ADMITTED, JobState.STARTING, JobState.RUNNING})


@dataclass(frozen=True, eq=False)
class PreemptionPlan:
    """Victims to preempt and the placement the blocked job gets once they stop.

    Attributes:
        victims: job ids, cheapest first.
        placement: the blocked job's placement on free plus freed GPUs.
        lost_gpu_s: lost work of the victims together (GPU-seconds).
        scope: ``cluster`` or ``<tier> <domain name>``.
    """

    victims: tuple[str, ...]
    placement: Placement
    lost_gpu_s: float
    scope: str


def lost_gpu_seconds(job: Job, now: datetime) -> float:
    """GPU-seconds of work ``job`` would lose if stopped at ``now``."""
    if job.state is not JobState.RUNNING or job.started_at is None:
        return 0.0
    since = job.started_at
    if job.last_checkpoint_at is not None and job.last_checkpoint_at > since:
        since = job.last_checkpoint_at
    return max(0.0, (now - since).total_seconds()) * job.gpus


@dataclass(frozen=True, slots=True)
class _Candidate:
    job: Job
    lost: float
    gpus: IntArray
    hosts: IntArray


@dataclass(frozen=True, eq=False)
class RepairPreemptionPlan:
    """Victims to preempt so that a job under repair can take their hosts.

    Attributes:
        victims: job ids, cheapest first.
        replacement: the repair's partial re-placement once they stopped (as planned now).
        lost_gpu_s: lost work of the victims together (GPU-seconds).
        scope: ``<tier> <domain name>`` the victims were taken from.
    """

    victims: tuple[str, ...]
    replacement: Replacement
    lost_gpu_s: float
    scope: str


def _candidates(
    state: SchedulerState, job: Job, now: datetime, *, for_repair: bool = False
) -> list[_Candidate]:
    out: list[_Candidate] = []
    index = state.index
    spares = state.spares if for_repair else frozenset()
    for job_id in state.allocated:
        other = state.jobs[job_id]
        if other.state not in PREEMPTIBLE_STATES or other.id == job.id:
            continue
        if for_repair and other.repair is not None:
            continue  # restarting after its own repair: leave it be
        on_spare = (
            other.spec.preemptible
            and other.allocation is not None
            and any(h in spares for h in other.allocation.hosts)
        )
        if not (on_spare or may_preempt(state, job, other)):
            continue
        alloc = other.allocation
        if alloc is None:  # pragma: no cover - allocated jobs hold one
            continue
        hosts = np.array([index.host_ids[h] for h in alloc.hosts], dtype=np.int64)
        out.append(_Candidate(other, lost_gpu_seconds(other, now), state.gpu_ids(alloc), hosts))
    out.sort(
        key=lambda c: (
            not c.job.spec.preemptible,  # jobs that accept short notice go first
            c.lost,
            state.queues[c.job.queue].priority,
            c.job.priority,
            -c.job.submitted_at.timestamp(),
            c.job.id,
        )
    )
    return out


def plan_preemption(
    state: SchedulerState,
    job: Job,
    now: datetime,
    *,
    base_busy: BoolArray,
    place: PlaceFn,
    max_placements: int,
) -> tuple[PreemptionPlan | None, int]:
    """Choose victims for ``job`` (see the module docstring).

    Args:
        state: the scheduler state.
        job: the blocked job.
        now: the cycle's time.
        base_busy: busy GPUs not counting those already on their way out.
        place: the placer (bound to the job's request and the scheduler's parameters).
        max_placements: budget of placer calls.

    Returns:
        The best plan found (or ``None``) and the placer calls spent.
    """
    candidates = _candidates(state, job, now)
    if not candidates:
        return None, 0
    index = state.index
    usable = state.usable_hosts()
    free_per_host = index.free_gpus_per_host(base_busy) * usable
    scopes: list[tuple[float, int, int, list[_Candidate]]] = []
    for level in range(1, index.cluster_level + 1):
        free = index.sum_per_domain(level, free_per_host)
        members: dict[int, list[_Candidate]] = {}
        for cand in candidates:
            domains = np.unique(index.ancestors[cand.hosts, level])
            if len(domains) == 1:
                members.setdefault(int(domains[0]), []).append(cand)
        for domain, group in members.items():
            need = job.gpus - int(free[domain])
            estimate = 0.0
            for cand in group:
                if need <= 0:
                    break
                need -= len(cand.gpus)
                estimate += cand.lost
            if need <= 0:
                scopes.append((estimate, level, domain, group))
    scopes.sort(key=lambda s: (s[0], s[1], s[2]))
    calls = 0
    plans: list[PreemptionPlan] = []
    for _, level, domain, group in scopes:
        if calls >= max_placements:
            break
        plan, spent = _plan_in_scope(
            state,
            job,
            (level, domain),
            group,
            base_busy=base_busy,
            place=place,
            budget=max_placements - calls,
        )
        calls += spent
        if plan is not None:
            plans.append(plan)
    if not plans:
        return None, calls

    def firm(plan: PreemptionPlan) -> int:
        """Victims that did not accept short notice (``preemptible``): fewest wins first."""
        return sum(1 for v in plan.victims if not state.jobs[v].spec.preemptible)

    best = min(plans, key=lambda p: (firm(p), p.lost_gpu_s, p.placement.cost_ms, len(p.victims)))
    return best, calls


def _plan_in_scope(
    state: SchedulerState,
    job: Job,
    scope: tuple[int, int],
    group: list[_Candidate],
    *,
    base_busy: BoolArray,
    place: PlaceFn,
    budget: int,
) -> tuple[PreemptionPlan | None, int]:
    index = state.index
    level, domain = scope
    allowed = np.zeros(index.num_hosts, dtype=np.bool_)
    allowed[index.domain_start[level][domain] : index.domain_end[level][domain]] = True
    busy = base_busy.copy()
    taken = 0
    calls = 0
    while taken < len(group):
        busy[group[taken].gpus] = False
        taken += 1
        capacity = FreeCapacity(state, busy, allowed)
        if not capacity.could_fit(job):
            continue
        if calls >= budget:
            return None, calls
        calls += 1
        result = place(capacity.snapshot(), job)
        if isinstance(result, Placement):
            return _pruned(state, scope, group[:taken], result), calls
    return None, calls


def _pruned(
    state: SchedulerState,
    scope: tuple[int, int],
    victims: list[_Candidate],
    placement: Placement,
) -> PreemptionPlan:
    index = state.index
    level, domain = scope
    used = np.zeros(index.num_gpus, dtype=np.bool_)
    used[placement_gpu_ids(index, placement)] = True
    needed = [v for v in victims if bool(used[v.gpus].any())]
    where = (
        "cluster"
        if level == index.cluster_level
        else f"{index.level_names[level]} {index.domain_names[level][domain]}"
    )
    return PreemptionPlan(
        victims=tuple(v.job.id for v in needed),
        placement=placement,
        lost_gpu_s=sum(v.lost for v in needed),
        scope=where,
    )


def plan_repair_preemption(
    state: SchedulerState,
    job: Job,
    now: datetime,
    *,
    vacated: Sequence[str],
    replace_on: ReplaceFn,
    accept: Callable[[Replacement], bool],
    max_placements: int,
) -> tuple[RepairPreemptionPlan | None, int]:
    """Choose victims in the leaf or pod of ``vacated`` for ``job``'s repair (module docstring).

    Args:
        state: the scheduler state.
        job: the job under repair (it still holds its allocation).
        now: the event's time.
        vacated: hosts the job leaves.
        replace_on: the job's partial re-placement on a busy mask.
        accept: whether a re-placement is good enough to preempt for.
        max_placements: budget of ``replace_on`` calls.

    Returns:
        The best plan found (or ``None``) and the calls spent.
    """
    index = state.index
    ids = [index.host_ids[h] for h in vacated if h in index.host_ids]
    candidates = _candidates(state, job, now, for_repair=True)
    if not candidates or not ids:
        return None, 0
    top = index.cluster_level
    levels = range(1, top) if top > 1 else range(1, 2)
    usable = state.usable_hosts()
    calls = 0
    plans: list[RepairPreemptionPlan] = []
    for level in levels:
        for domain in sorted({int(d) for d in index.ancestors[ids, level]}):
            if calls >= max_placements:
                break
            start, end = index.domain_start[level][domain], index.domain_end[level][domain]
            group = [c for c in candidates if bool(((c.hosts >= start) & (c.hosts < end)).any())]
            plan, spent = _repair_in_scope(
                state,
                (level, domain),
                group,
                replace_on=replace_on,
                accept=accept,
                usable=usable,
                budget=max_placements - calls,
            )
            calls += spent
            if plan is not None:
                plans.append(plan)
    if not plans:
        return None, calls

    def firm(plan: RepairPreemptionPlan) -> int:
        return sum(1 for v in plan.victims if not state.jobs[v].spec.preemptible)

    best = min(
        plans,
        key=lambda p: (firm(p), p.lost_gpu_s, p.replacement.cost_ms, len(p.victims), p.scope),
    )
    return best, calls


def _repair_in_scope(
    state: SchedulerState,
    scope: tuple[int, int],
    group: list[_Candidate],
    *,
    replace_on: ReplaceFn,
    accept: Callable[[Replacement], bool],
    usable: BoolArray,
    budget: int,
) -> tuple[RepairPreemptionPlan | None, int]:
    index = state.index
    level, domain = scope
    start, end = index.domain_start[level][domain], index.domain_end[level][domain]
    busy = state.busy.copy()

    def whole_free() -> int:
        free = index.free_gpus_per_host(busy)[start:end]
        return int(np.count_nonzero((free == index.host_gpus[start:end]) & usable[start:end]))

    base = whole_free()
    calls = 0
    for taken, cand in enumerate(group, 1):
        busy[cand.gpus] = False
        if whole_free() <= base:
            continue  # frees no whole host in the scope (yet)
        if calls >= budget:
            break
        calls += 1
        result = replace_on(busy)
        if isinstance(result, Replacement) and accept(result):
            used = np.zeros(index.num_hosts, dtype=np.bool_)
            used[list(result.moves.values())] = True
            needed = [v for v in group[:taken] if bool(used[v.hosts].any())]
            where = f"{index.level_names[level]} {index.domain_names[level][domain]}"
            plan = RepairPreemptionPlan(
                victims=tuple(v.job.id for v in needed),
                replacement=result,
                lost_gpu_s=sum(v.lost for v in needed),
                scope=where,
            )
            return (plan if needed else None), calls
    return None, calls


def partial_only(result: Replacement) -> bool:
    """Whether ``result`` moved only the vacated hosts' ranks (what a repair preempts for)."""
    return result.method == ReplaceMethod.PARTIAL
