"""Queue policy: the order in which queued jobs are considered, fair share, quotas, priority.

Order of a scheduling cycle (:class:`CycleOrder`):

1. queues of higher ``priority`` first, strictly;
2. among queues of equal priority, fair share: the next job comes from the queue with the
   smallest ``held GPUs / weight`` (its dominant share, as in DRF progressive filling), ties by
   name. Shares are re-read after every admission, so one cycle interleaves the queues;
3. within a queue: job priority (higher first), then submit time, then id.

A job whose queue would exceed its GPU quota is skipped (it does not block the others).

Preemption rank (:func:`may_preempt`): a job may preempt a job of a lower-priority queue, or a
job of its own queue with a lower job priority. Queues of equal priority share by fair share,
never by preemption.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from scheduler.core.records import Job, Queue
from scheduler.core.state import PendingKey, SchedulerState


def share(queue: Queue, held_gpus: int) -> float:
    """A queue's fair-share position: GPUs held per unit of weight."""
    return held_gpus / queue.weight


def within_quota(queue: Queue, held_gpus: int, job: Job) -> bool:
    """Whether ``job`` fits the queue's GPU quota next to what the queue holds."""
    return queue.gpu_quota is None or held_gpus + job.gpus <= queue.gpu_quota


def may_preempt(state: SchedulerState, preemptor: Job, victim: Job) -> bool:
    """Whether ``preemptor`` outranks ``victim`` (see the module docstring)."""
    mine = state.queues[preemptor.queue].priority
    theirs = state.queues[victim.queue].priority
    if mine != theirs:
        return mine > theirs
    return preemptor.queue == victim.queue and preemptor.priority > victim.priority


class CycleOrder:
    """Iterates the queued jobs of a cycle in scheduling order (see the module docstring).

    The queues' pending lists are copied at construction, so admitting jobs while iterating is
    safe; shares are read from ``state.queue_usage`` each time a queue is put back.
    """

    def __init__(self, state: SchedulerState) -> None:
        self._state = state
        self._lists: dict[str, list[PendingKey]] = {
            name: list(keys) for name, keys in state.pending.items() if keys
        }
        self._heap: list[tuple[int, float, str, int]] = []
        for name in self._lists:
            self._push(name, 0)

    def _push(self, name: str, position: int) -> None:
        if position >= len(self._lists[name]):
            return
        queue = self._state.queues[name]
        held = self._state.queue_usage.get(name, 0)
        heapq.heappush(self._heap, (-queue.priority, share(queue, held), name, position))

    def __iter__(self) -> Iterator[Job]:
        jobs = self._state.jobs
        while self._heap:
            _, _, name, position = heapq.heappop(self._heap)
            job_id = self._lists[name][position][2]
            yield jobs[job_id]
            self._push(name, position + 1)


def queue_position(state: SchedulerState, job: Job) -> int | None:
    """1-based position of a queued job in its queue, or ``None`` if it is not queued."""
    for i, key in enumerate(state.pending.get(job.queue, ())):
        if key[2] == job.id:
            return i + 1
    return None
