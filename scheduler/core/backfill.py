"""Backfill (EASY): a reservation for the blocked head job, and who may start ahead of it.

When the first job in scheduling order cannot be placed, it gets a *reservation*: the earliest
time ``T`` at which it fits if running jobs end by their time limits, and the GPUs it would get
then. A later job may start now only if

- it sets ``time_limit_s`` and will end by ``T`` (it leaves before the head needs anything), or
- its placement avoids the reserved GPUs (it is placed with them marked busy).

Either way the head job's start is not delayed, given that running jobs end by their limits.

Finding ``T``: allocated jobs are sorted by expected end (``started_at + time_limit_s`` for
running jobs; ``now + limit`` for admitted or starting ones; ``now`` for preempted jobs and
fenced GPUs, which are being freed). Jobs without a time limit are assumed to run
``default_time_limit_s`` (planning only). Releasing them in that order, the smallest prefix
that passes the cheap count checks is found by binary search; the placer then confirms it,
searching further right (binary search, bounded number of placer calls) if the counts were
optimistic. Feasibility only grows as GPUs are released, so the search is sound.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from placement import Placement, PlacementFailure, Snapshot
from scheduler.core.capacity import FreeCapacity, gpu_mask, placement_gpu_ids
from scheduler.core.records import Job
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState
from topology.index import BoolArray

PlaceFn = Callable[[Snapshot, Job], Placement | PlacementFailure]


@dataclass(frozen=True, eq=False)
class Reservation:
    """GPUs held back for a blocked job from ``start`` on.

    Attributes:
        job_id: the job.
        start: when it is expected to fit (``at`` of the cycle when it waits only for
            preempted jobs to stop).
        mask: the GPUs it would get (global GPU id mask).
        kind: ``backfill`` (waits for jobs to end), ``preemption`` (waits for preempted
            jobs' ranks to stop).
        placement: the placement found for it at ``start``.
    """

    job_id: str
    start: datetime
    mask: BoolArray
    kind: str
    placement: Placement


def expected_end(job: Job, now: datetime, default_limit_s: int) -> datetime:
    """When an allocated job is expected to release its GPUs (see the module docstring)."""
    if job.state is JobState.PREEMPTED:
        return now
    limit = timedelta(seconds=job.spec.time_limit_s or default_limit_s)
    if job.state is JobState.RUNNING and job.started_at is not None:
        return max(now, job.started_at + limit)
    return now + limit


def ends_before(job: Job, now: datetime, deadline: datetime) -> bool:
    """Whether ``job``, started now, ends by ``deadline`` under its own time limit."""
    limit = job.spec.time_limit_s
    return limit is not None and now + timedelta(seconds=limit) <= deadline


def find_reservation(
    state: SchedulerState,
    job: Job,
    now: datetime,
    *,
    default_limit_s: int,
    place: PlaceFn,
    max_placements: int,
) -> tuple[Reservation | None, int]:
    """The head job's reservation, or ``None`` if it fits nowhere even when all jobs end.

    Returns:
        The reservation (or ``None``) and the number of placer calls spent.
    """
    ends: list[tuple[datetime, str]] = sorted(
        (expected_end(state.jobs[j], now, default_limit_s), j) for j in state.allocated
    )
    chunks: list[np.ndarray] = []
    for fence in state.fences.values():
        chunks.append(np.asarray(fence.gpus, dtype=np.int64))
    first_release = len(chunks)
    times = [now] * first_release
    for end, job_id in ends:
        alloc = state.jobs[job_id].allocation
        if alloc is not None:
            chunks.append(state.gpu_ids(alloc))
            times.append(end)
    sizes = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes))) if chunks else np.zeros(1, np.int64)
    released = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)

    def busy_after(k: int) -> BoolArray:
        busy = state.busy.copy()
        busy[released[: offsets[k]]] = False
        return busy

    def counts_ok(k: int) -> bool:
        return FreeCapacity(state, busy_after(k)).could_fit(job)

    steps = len(chunks)
    if steps == 0 or not counts_ok(steps):
        return None, 0
    lo, hi = 1, steps  # the job does not fit now (k = 0): the caller tried that
    while lo < hi:
        mid = (lo + hi) // 2
        if counts_ok(mid):
            hi = mid
        else:
            lo = mid + 1
    found: dict[int, Placement] = {}

    def fits(k: int) -> bool:
        result = place(FreeCapacity(state, busy_after(k)).snapshot(), job)
        if isinstance(result, Placement):
            found[k] = result
            return True
        return False

    calls = 1
    if fits(lo):
        best = lo
    else:
        calls += 1
        if lo == steps or not fits(steps):
            return None, calls
        bad, best = lo, steps
        while best - bad > 1 and calls < max_placements:
            mid = (bad + best) // 2
            calls += 1
            if fits(mid):
                best = mid
            else:
                bad = mid
    placement = found[best]
    start = max(times[best - 1], now)
    mask = gpu_mask(state.index, placement_gpu_ids(state.index, placement))
    return Reservation(job.id, start, mask, "backfill", placement), calls
