"""``SchedulerState``: jobs, nodes and queues, the indexes derived from them, and ``validate``.

Every change goes through :meth:`SchedulerState.put_job`, :meth:`~SchedulerState.put_node` or
:meth:`~SchedulerState.put_queue`, which keep the derived structures in step and record the
change for the store:

- ``busy``: one flag per global GPU id, set for GPUs held by an allocation or a fence;
- ``host_jobs``: per host, the jobs holding GPUs there;
- ``fences``: GPUs of a job that has let go of them (cancelled, failed, requeued after a
  failure) while its ranks may still be stopping; they stay busy until the agent reports the
  ranks gone, the host is lost, or ``2 * stop_grace_s`` passes. Fences are not persisted
  (after a restart the agents have had longer than any grace period);
- ``queue_usage``: GPUs held per queue; ``pending``: per queue, queued jobs in order
  (priority, then submit time, then id); ``submissions``: (user, submission id) -> job id;
- ``unavailable``: ids of hosts that must not receive new ranks;
- ``capacity_epoch``: bumped whenever capacity grows (GPUs released, a host back in service),
  so cached "does not fit" answers are known to be stale.

A record's version goes up by one per handled event that changes it (:meth:`take_changes`
ends an event). :meth:`validate` recomputes everything derived and checks the cross-structure
invariants; tests call it after every event.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

import numpy as np

from firsthop.reasons import ErrorReason, JobReason
from scheduler.core.actions import ChangeSet
from scheduler.core.records import Allocation, Job, Node, Queue
from scheduler.core.states import (
    ALLOCATED_JOB_STATES,
    QUEUED_JOB_STATES,
    Health,
    JobState,
    NodeState,
    check_job_transition,
    check_node_transition,
    is_terminal,
)
from topology.errors import FirsthopError
from topology.index import BoolArray, IntArray, TopologyIndex

PendingKey = tuple[int, datetime, str]
"""Order of queued jobs within a queue: higher priority, then earlier submission, then id."""

SCHEDULABLE_HEALTH = frozenset({Health.HEALTHY, Health.UNKNOWN})


class InvariantError(FirsthopError):
    """The scheduler state broke one of its invariants (a bug, never bad input)."""

    status_code = "INTERNAL"
    default_reason = ErrorReason.INVARIANT_VIOLATED


@dataclass(frozen=True, slots=True)
class Fence:
    """GPUs a departed job's ranks may still be using on one host."""

    job_id: str
    attempt: int
    node: str
    gpus: tuple[int, ...]
    """Global GPU ids."""
    deadline: datetime


def pending_key(job: Job) -> PendingKey:
    """The within-queue order key of a queued job."""
    return (-job.priority, job.submitted_at, job.id)


def node_schedulable(node: Node) -> bool:
    """Whether new ranks may go to ``node``."""
    return node.state is NodeState.READY and node.health in SCHEDULABLE_HEALTH


class SchedulerState:
    """Everything the scheduler knows, with derived indexes (see the module docstring)."""

    def __init__(self, index: TopologyIndex) -> None:
        self.index = index
        self.jobs: dict[str, Job] = {}
        self.nodes: dict[str, Node] = {}
        self.queues: dict[str, Queue] = {}
        self.busy: BoolArray = np.zeros(index.num_gpus, dtype=np.bool_)
        self.host_jobs: dict[str, set[str]] = {}
        self.fences: dict[tuple[str, str, int], Fence] = {}
        """(job id, host, attempt) -> fence."""
        self.queue_usage: dict[str, int] = {}
        self.pending: dict[str, list[PendingKey]] = {}
        self.submissions: dict[tuple[str, str], str] = {}
        self.unavailable: set[int] = set(range(index.num_hosts))
        self.allocated: set[str] = set()
        """Ids of jobs holding an allocation."""
        self.capacity_epoch = 0
        self._dirty_jobs: dict[str, None] = {}
        self._dirty_nodes: dict[str, None] = {}
        self._dirty_queues: dict[str, None] = {}
        self._notify_jobs: dict[str, None] = {}
        self._notify_nodes: dict[str, None] = {}

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_records(
        cls,
        index: TopologyIndex,
        jobs: Iterable[Job],
        nodes: Iterable[Node],
        queues: Iterable[Queue],
    ) -> SchedulerState:
        """A state rebuilt from stored records (nothing is marked changed)."""
        state = cls(index)
        for queue in queues:
            state.queues[queue.name] = queue
            state.pending.setdefault(queue.name, [])
            state.queue_usage.setdefault(queue.name, 0)
        for node in nodes:
            state.nodes[node.name] = node
            state._index_node(node)
        for job in jobs:
            state.pending.setdefault(job.queue, [])
            state.queue_usage.setdefault(job.queue, 0)
            state.jobs[job.id] = job
            state._index_job(job)
        return state

    # ------------------------------------------------------------------ lookups

    def job_for_submission(self, user: str, submission_id: str) -> Job | None:
        """The job a user submitted with ``submission_id``, if any."""
        job_id = self.submissions.get((user, submission_id))
        return None if job_id is None else self.jobs[job_id]

    def forget_finished(self, before: datetime) -> list[str]:
        """Drop jobs that finished before ``before`` from memory; their ids.

        They stay in the store, which answers for them from then on (the runtime reads it).
        A job still fenced, or changed by the event being handled, is kept. Nothing else
        refers to a finished job, so no other structure changes.
        """
        fenced = {fence.job_id for fence in self.fences.values()}
        gone = [
            job.id
            for job in self.jobs.values()
            if job.finished_at is not None
            and job.finished_at < before
            and is_terminal(job.state)
            and job.id not in fenced
            and job.id not in self._dirty_jobs
        ]
        for job_id in gone:
            job = self.jobs.pop(job_id)
            if job.submission_id is not None:
                self.submissions.pop((job.user, job.submission_id), None)
        return gone

    def queued_jobs(self, queue: str) -> Iterator[Job]:
        """Queued jobs of ``queue`` in order."""
        for key in self.pending.get(queue, ()):
            yield self.jobs[key[2]]

    def jobs_on(self, node: str) -> list[Job]:
        """Jobs holding GPUs on ``node`` (sorted by id)."""
        return [self.jobs[j] for j in sorted(self.host_jobs.get(node, ()))]

    def host_id(self, node: str) -> int:
        """Dense topology id of a host name."""
        return self.index.host_ids[node]

    def gpu_ids(self, allocation: Allocation) -> IntArray:
        """Global GPU ids of an allocation, in rank order."""
        offset = self.index.gpu_offset
        ids = self.index.host_ids
        return np.fromiter(
            (offset[ids[s.host]] + s.gpu for s in allocation.ranks),
            dtype=np.int64,
            count=len(allocation.ranks),
        )

    @property
    def spares(self) -> frozenset[str]:
        """Names of the hosts in the spare pool."""
        return frozenset(name for name, node in self.nodes.items() if node.spare)

    def usable_hosts(self) -> BoolArray:
        """Per host id: in service (no unavailability)."""
        mask = np.ones(self.index.num_hosts, dtype=np.bool_)
        if self.unavailable:
            mask[np.fromiter(self.unavailable, np.int64, len(self.unavailable))] = False
        return mask

    # ------------------------------------------------------------------ changes

    def put_job(self, job: Job) -> Job:
        """Store ``job`` (new or changed), bumping its version once per event."""
        old = self.jobs.get(job.id)
        job = _versioned(job, old, changed_this_event=job.id in self._dirty_jobs)
        if old is not None:
            self._unindex_job(old, keep=job)
        self.jobs[job.id] = job
        self._index_job(job, old=old)
        self._dirty_jobs[job.id] = None
        if old is None or old.state is not job.state or old.reason != job.reason:
            self._notify_jobs[job.id] = None
        return job

    def transition(
        self,
        job: Job,
        dst: JobState,
        at: datetime,
        reason: JobReason,
        message: str = "",
        *,
        updated: Job | None = None,
    ) -> Job:
        """Move ``job`` to ``dst`` through the transitions table.

        Other field changes come as ``updated``, the job record with them made
        (``replace(job, allocation=None, ...)``, which mypy checks field by field); state,
        reason, message and ``updated_at`` are set here. A job that lets go of its allocation
        keeps it as ``last_allocation``; one that ends gets ``finished_at``.
        """
        check_job_transition(job.state, dst)
        base = job if updated is None else updated
        if base.id != job.id:
            raise InvariantError(f"transition of job {job.id} given the record of job {base.id}")
        new = replace(base, state=dst, updated_at=at, reason=reason, message=message)
        if job.allocation is not None and new.allocation is None:
            new = replace(new, last_allocation=job.allocation)
        if is_terminal(dst) and new.finished_at is None:
            new = replace(new, finished_at=at)
        return self.put_job(new)

    def put_node(self, node: Node) -> Node:
        """Store ``node`` (new or changed), bumping its version once per event."""
        old = self.nodes.get(node.name)
        node = _versioned(node, old, changed_this_event=node.name in self._dirty_nodes)
        self.nodes[node.name] = node
        self._index_node(node)
        self._dirty_nodes[node.name] = None
        if old is None or old.state is not node.state or old.health is not node.health:
            self._notify_nodes[node.name] = None
        return node

    def move_node(
        self, node: Node, dst: NodeState, reason: str, *, updated: Node | None = None
    ) -> Node:
        """Move ``node`` to ``dst`` through the transitions table; other field changes come
        as ``updated``, the node record with them made (``replace(node, health=...)``)."""
        if dst is not node.state:
            check_node_transition(node.state, dst)
        base = node if updated is None else updated
        if base.name != node.name:
            raise InvariantError(f"move of node {node.name} given the record of node {base.name}")
        return self.put_node(replace(base, state=dst, reason=reason))

    def touch_node(self, node: Node, at: datetime) -> None:
        """Record a heartbeat: in memory only (not a change for the store, no new version)."""
        self.nodes[node.name] = replace(node, last_heartbeat_at=at)

    def put_queue(self, queue: Queue) -> Queue:
        """Store ``queue`` (new or changed), bumping its version once per event."""
        old = self.queues.get(queue.name)
        queue = _versioned(queue, old, changed_this_event=queue.name in self._dirty_queues)
        self.queues[queue.name] = queue
        self.pending.setdefault(queue.name, [])
        self.queue_usage.setdefault(queue.name, 0)
        self._dirty_queues[queue.name] = None
        return queue

    def add_fence(self, job: Job, node: str, deadline: datetime) -> None:
        """Keep ``job``'s GPUs on ``node`` busy until its ranks there are gone.

        ``job`` is the record as it was while it held its allocation; call this right after
        the job let go of it.
        """
        if job.allocation is None:
            return
        first = int(self.index.gpu_offset[self.host_id(node)])
        gpus = tuple(first + gpu for gpu in job.allocation.gpus_on(node))
        if not gpus:
            return
        if bool(self.busy[list(gpus)].any()):
            raise InvariantError(f"fence of job {job.id} on {node}: GPUs already busy")
        self.busy[list(gpus)] = True
        self.fences[(job.id, node, job.restarts)] = Fence(
            job.id, job.restarts, node, gpus, deadline
        )

    def release_fence(self, job_id: str, node: str, attempt: int) -> bool:
        """Release the fence of ``job_id``'s ``attempt`` on ``node``; whether there was one."""
        fence = self.fences.pop((job_id, node, attempt), None)
        if fence is None:
            return False
        self.busy[list(fence.gpus)] = False
        self.capacity_epoch += 1
        return True

    def fences_on(self, node: str) -> list[Fence]:
        """Fences on ``node``."""
        return [f for f in self.fences.values() if f.node == node]

    def take_changes(self) -> tuple[ChangeSet, list[Job], list[Node]]:
        """End an event: the records to persist, and jobs/nodes whose state changed."""
        changes = ChangeSet(
            jobs=tuple(self.jobs[j] for j in self._dirty_jobs),
            nodes=tuple(self.nodes[n] for n in self._dirty_nodes),
            queues=tuple(self.queues[q] for q in self._dirty_queues),
        )
        jobs = [self.jobs[j] for j in self._notify_jobs]
        nodes = [self.nodes[n] for n in self._notify_nodes]
        self._dirty_jobs.clear()
        self._dirty_nodes.clear()
        self._dirty_queues.clear()
        self._notify_jobs.clear()
        self._notify_nodes.clear()
        return changes, jobs, nodes

    # ------------------------------------------------------------------ indexes

    def _index_job(self, job: Job, old: Job | None = None) -> None:
        queued = job.state in QUEUED_JOB_STATES
        if queued and not (
            old is not None and old.state in QUEUED_JOB_STATES and _same_key(old, job)
        ):
            bisect.insort(self.pending[job.queue], pending_key(job))
        if job.allocation is not None and not (
            old is not None and old.allocation is job.allocation
        ):
            gpus = self.gpu_ids(job.allocation)
            if bool(self.busy[gpus].any()):
                raise InvariantError(f"job {job.id}: GPUs already allocated")
            self.busy[gpus] = True
            for host in job.allocation.hosts:
                self.host_jobs.setdefault(host, set()).add(job.id)
            self.queue_usage[job.queue] = self.queue_usage.get(job.queue, 0) + job.gpus
            self.allocated.add(job.id)
        if job.submission_id is not None:
            self.submissions[(job.user, job.submission_id)] = job.id

    def _unindex_job(self, job: Job, keep: Job) -> None:
        if job.state in QUEUED_JOB_STATES and not (
            keep.state in QUEUED_JOB_STATES and _same_key(job, keep)
        ):
            keys = self.pending[job.queue]
            i = bisect.bisect_left(keys, pending_key(job))
            del keys[i]
        if job.allocation is not None and keep.allocation is not job.allocation:
            self.busy[self.gpu_ids(job.allocation)] = False
            for host in job.allocation.hosts:
                holders = self.host_jobs[host]
                holders.discard(job.id)
                if not holders:
                    del self.host_jobs[host]
            self.queue_usage[job.queue] -= job.gpus
            self.allocated.discard(job.id)
            self.capacity_epoch += 1

    def _index_node(self, node: Node) -> None:
        host = self.index.host_ids.get(node.name)
        if host is None:
            return
        if node_schedulable(node):
            if host in self.unavailable:
                self.unavailable.discard(host)
                self.capacity_epoch += 1
        else:
            self.unavailable.add(host)

    # ------------------------------------------------------------------ invariants

    def validate(self) -> None:
        """Check every cross-structure invariant; raise :class:`InvariantError` if broken.

        Checked: every topology host has a node of its GPU count and no other node exists;
        every job's queue exists; jobs hold an allocation exactly in the allocated states;
        an allocation covers ranks ``0..gpus-1`` on existing GPUs of READY or DRAINING nodes;
        no GPU is held twice (allocations and fences together) and ``busy`` is exactly their
        union; ``host_jobs``, ``queue_usage``, ``pending`` (sorted), ``submissions``,
        ``allocated`` and ``unavailable`` equal what the records imply; a DRAINING node holds
        a job; per-state job fields are consistent; versions are positive. (Exception: a
        preempted job's hosts that already count as stopped may be LOST or FAILED.)
        """
        problems: list[str] = []
        problems += self._check_nodes()
        problems += self._check_jobs()
        problems += self._check_indexes()
        if problems:
            shown = "; ".join(problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise InvariantError(f"{len(problems)} invariant(s) broken: {shown}{more}")

    def _check_nodes(self) -> list[str]:
        out: list[str] = []
        index = self.index
        if set(self.nodes) != set(index.host_names):
            extra = sorted(set(self.nodes) - set(index.host_names))[:3]
            missing = sorted(set(index.host_names) - set(self.nodes))[:3]
            out.append(f"nodes differ from the topology (extra {extra}, missing {missing})")
        for name, node in self.nodes.items():
            host = index.host_ids.get(name)
            if host is not None and node.gpus != int(index.host_gpus[host]):
                out.append(f"node {name}: {node.gpus} GPUs, topology says {index.host_gpus[host]}")
            if node.version < 1:
                out.append(f"node {name}: version {node.version}")
            if node.state is NodeState.DRAINING and not self.host_jobs.get(name):
                out.append(f"node {name}: DRAINING with no job")
        for name in self.queues:
            if self.queues[name].version < 1:
                out.append(f"queue {name}: version {self.queues[name].version}")
        return out

    def _check_jobs(self) -> list[str]:
        out: list[str] = []
        for job in self.jobs.values():
            out += _job_problems(job, self)
        return out

    def _check_indexes(self) -> list[str]:
        out: list[str] = []
        busy = np.zeros_like(self.busy)
        host_jobs: dict[str, set[str]] = {}
        usage: dict[str, int] = dict.fromkeys(self.queues, 0)
        pending: dict[str, list[PendingKey]] = {q: [] for q in self.queues}
        submissions: dict[tuple[str, str], str] = {}
        allocated: set[str] = set()
        for job in self.jobs.values():
            if job.allocation is not None:
                gpus = self.gpu_ids(job.allocation)
                if busy[gpus].any() or len(set(gpus.tolist())) != len(gpus):
                    out.append(f"job {job.id}: a GPU is allocated twice")
                busy[gpus] = True
                for host in job.allocation.hosts:
                    host_jobs.setdefault(host, set()).add(job.id)
                usage[job.queue] = usage.get(job.queue, 0) + job.gpus
                allocated.add(job.id)
            if job.state in QUEUED_JOB_STATES:
                pending.setdefault(job.queue, []).append(pending_key(job))
            if job.submission_id is not None:
                key = (job.user, job.submission_id)
                if key in submissions:
                    out.append(f"submission {key} used by two jobs")
                submissions[key] = job.id
        for fence in self.fences.values():
            ids = list(fence.gpus)
            if busy[ids].any():
                out.append(f"fence of {fence.job_id} on {fence.node} overlaps an allocation")
            busy[ids] = True
        if not np.array_equal(busy, self.busy):
            wrong = int((busy != self.busy).sum())
            out.append(f"busy mask differs from allocations and fences on {wrong} GPUs")
        if host_jobs != self.host_jobs:
            out.append("host_jobs differs from the allocations")
        if _nonzero(usage) != _nonzero(self.queue_usage):
            out.append(f"queue_usage {self.queue_usage} differs from allocations {usage}")
        for keys in pending.values():
            keys.sort()
        if {q: k for q, k in pending.items() if k} != {q: k for q, k in self.pending.items() if k}:
            out.append("pending index differs from the queued jobs")
        if any(keys != sorted(keys) for keys in self.pending.values()):
            out.append("a pending list is out of order")
        if submissions != self.submissions:
            out.append("submission index differs from the jobs")
        if allocated != self.allocated:
            out.append("allocated set differs from the jobs")
        unavailable = {
            self.index.host_ids[n.name]
            for n in self.nodes.values()
            if n.name in self.index.host_ids and not node_schedulable(n)
        } | (
            set(range(self.index.num_hosts))
            - {self.index.host_ids[n] for n in self.nodes if n in self.index.host_ids}
        )
        if unavailable != self.unavailable:
            out.append("unavailable hosts differ from the node states")
        return out


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def _same_key(a: Job, b: Job) -> bool:
    return a.queue == b.queue and pending_key(a) == pending_key(b)


def _job_problems(job: Job, state: SchedulerState) -> list[str]:
    out: list[str] = []
    name = f"job {job.id}"
    if job.queue not in state.queues:
        out.append(f"{name}: unknown queue {job.queue!r}")
    if job.version < 1:
        out.append(f"{name}: version {job.version}")
    holds = job.state in ALLOCATED_JOB_STATES
    if holds != (job.allocation is not None):
        out.append(f"{name}: {job.state} with{'out' if holds else ''} an allocation")
    if is_terminal(job.state) and job.finished_at is None:
        out.append(f"{name}: {job.state} without finished_at")
    if job.state is JobState.RUNNING and job.started_at is None:
        out.append(f"{name}: RUNNING without started_at")
    if job.state is not JobState.PREEMPTED and (
        job.stopped_hosts or job.stop_deadline or job.checkpoint_requested_at or job.clean_hosts
    ):
        out.append(f"{name}: stop bookkeeping outside PREEMPTED")
    if job.state in QUEUED_JOB_STATES and (job.started_hosts or job.exited_ranks):
        out.append(f"{name}: queued with rank bookkeeping")
    alloc = job.allocation
    if alloc is None:
        return out
    if sorted(s.rank for s in alloc.ranks) != list(range(job.gpus)):
        out.append(f"{name}: allocation does not cover ranks 0..{job.gpus - 1}")
    hosts = set(alloc.hosts)
    for slot in alloc.ranks:
        node = state.nodes.get(slot.host)
        if node is None:
            out.append(f"{name}: rank {slot.rank} on unknown node {slot.host}")
            break
        if not 0 <= slot.gpu < node.gpus:
            out.append(f"{name}: rank {slot.rank} on GPU {slot.gpu} of {slot.host}")
            break
    for host in hosts - job.stopped_hosts:
        # A preempted job keeps its GPUs until all its hosts stopped; a host it lost or that
        # failed counts as stopped, so only its other hosts must still be in service.
        node = state.nodes.get(host)
        if node is not None and node.state not in (NodeState.READY, NodeState.DRAINING):
            out.append(f"{name}: allocated on {node.state} node {host}")
        if node is not None and node.health is Health.FAILED:
            out.append(f"{name}: allocated on failed node {host}")
    if not job.started_hosts <= hosts or not job.stopped_hosts <= hosts:
        out.append(f"{name}: started/stopped hosts outside the allocation")
    if any(not 0 <= r < job.gpus for r in job.exited_ranks):
        out.append(f"{name}: exited rank out of range")
    return out


_R = TypeVar("_R", Job, Node, Queue)


def _versioned(record: _R, old: _R | None, *, changed_this_event: bool) -> _R:
    """``record`` with its version bumped once per event: 1 when new, +1 on an event's first
    change, unchanged for further changes within the same event."""
    if old is None:
        version = 1
    elif changed_this_event:
        version = old.version
    else:
        version = old.version + 1
    return record if record.version == version else replace(record, version=version)
