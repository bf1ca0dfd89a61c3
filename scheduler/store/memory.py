"""``MemoryStore``: the storage protocol in process memory.

Not durable (it is the baseline the benchmarks compare against, and the store of tests and
the simulator), but otherwise it keeps the contract exactly: atomic saves, optimistic versions,
the same filters, order and page tokens as the SQL store.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from datetime import datetime
from threading import Lock

from scheduler.core.actions import ChangeSet
from scheduler.core.campaign_records import Campaign
from scheduler.core.errors import DuplicateSubmissionError
from scheduler.core.records import Job, Node, Queue
from scheduler.core.states import JobState
from scheduler.store.protocol import (
    JobPage,
    StoredState,
    VersionConflictError,
    check_limit,
    decode_page_token,
    encode_page_token,
)


class MemoryStore:
    """A :class:`~scheduler.store.protocol.Store` in memory (thread-safe)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._order: list[tuple[datetime, str]] = []
        self._nodes: dict[str, Node] = {}
        self._queues: dict[str, Queue] = {}
        self._campaigns: dict[str, Campaign] = {}
        self._submissions: dict[tuple[str, str], str] = {}
        self._lock = Lock()

    def load(self, *, finished_after: datetime | None = None) -> StoredState:
        """Every stored record (jobs in submission order), finished jobs since
        ``finished_after`` if given."""
        with self._lock:
            jobs = (self._jobs[j] for _, j in self._order)
            return StoredState(
                jobs=tuple(j for j in jobs if _kept(j, finished_after)),
                nodes=tuple(self._nodes[n] for n in sorted(self._nodes)),
                queues=tuple(self._queues[q] for q in sorted(self._queues)),
                campaigns=tuple(self._campaigns[c] for c in sorted(self._campaigns)),
            )

    def save(self, changes: ChangeSet) -> None:
        """Apply ``changes`` atomically (all records checked before any is written).

        Raises:
            VersionConflictError: a stored record is not older than its replacement.
            DuplicateSubmissionError: two jobs with one (user, submission id).
        """
        with self._lock:
            for job in changes.jobs:
                _check(self._jobs.get(job.id), job.version, f"job {job.id}")
            for node in changes.nodes:
                _check(self._nodes.get(node.name), node.version, f"node {node.name}")
            for queue in changes.queues:
                _check(self._queues.get(queue.name), queue.version, f"queue {queue.name}")
            for campaign in changes.campaigns:
                _check(
                    self._campaigns.get(campaign.name),
                    campaign.version,
                    f"campaign {campaign.name}",
                )
            claimed: dict[tuple[str, str], str] = {}
            for job in changes.jobs:
                if job.submission_id is not None:
                    key = (job.user, job.submission_id)
                    owner = claimed.setdefault(key, self._submissions.get(key, job.id))
                    if owner != job.id:
                        raise DuplicateSubmissionError(
                            f"submission id {job.submission_id!r} of {job.user!r} is used by "
                            f"job {owner}"
                        )
            for job in changes.jobs:
                if job.submission_id is not None:
                    self._submissions[(job.user, job.submission_id)] = job.id
                if job.id not in self._jobs:
                    bisect.insort(self._order, (job.submitted_at, job.id))
                self._jobs[job.id] = job
            for node in changes.nodes:
                self._nodes[node.name] = node
            for queue in changes.queues:
                self._queues[queue.name] = queue
            for campaign in changes.campaigns:
                self._campaigns[campaign.name] = campaign

    def get_job(self, job_id: str) -> Job | None:
        """The stored job, or ``None``."""
        with self._lock:
            return self._jobs.get(job_id)

    def job_for_submission(self, user: str, submission_id: str) -> Job | None:
        """The job ``user`` submitted with ``submission_id``, or ``None``."""
        with self._lock:
            job_id = self._submissions.get((user, submission_id))
            return None if job_id is None else self._jobs[job_id]

    def has_finished_before(self, at: datetime) -> bool:
        """Whether a stored job finished before ``at``."""
        with self._lock:
            return any(not _kept(job, at) for job in self._jobs.values())

    def count_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
    ) -> int:
        """How many jobs match the filters."""
        wanted = frozenset(states)
        with self._lock:
            return sum(
                1
                for job in self._jobs.values()
                if (not wanted or job.state in wanted)
                and (queue is None or job.queue == queue)
                and (user is None or job.user == user)
            )

    def list_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> JobPage:
        """Jobs in submission order, filtered, one page at a time."""
        check_limit(limit)
        wanted = frozenset(states)
        with self._lock:
            start = 0
            if page_token is not None:
                start = bisect.bisect_right(self._order, decode_page_token(page_token))
            out: list[Job] = []
            more = False
            for _, job_id in self._order[start:]:
                job = self._jobs[job_id]
                if wanted and job.state not in wanted:
                    continue
                if (queue is not None and job.queue != queue) or (
                    user is not None and job.user != user
                ):
                    continue
                if len(out) == limit:
                    more = True
                    break
                out.append(job)
        token = encode_page_token(out[-1]) if more else None
        return JobPage(tuple(out), token)

    def close(self) -> None:
        """Nothing to release."""


def _kept(job: Job, finished_after: datetime | None) -> bool:
    return finished_after is None or job.finished_at is None or job.finished_at >= finished_after


def _check(stored: Job | Node | Queue | Campaign | None, version: int, what: str) -> None:
    if stored is not None and stored.version >= version:
        raise VersionConflictError(
            f"{what}: stored version {stored.version} is not older than {version}"
        )
