"""Finished jobs after their retention window: in the store, not in memory.

The core keeps every job it is told about; a scheduler that ran for months would hold every job
it ever ran (about 5.5 KB each) and reload them all at every restart. So the runtime drops jobs
that finished more than ``retention_s`` ago from the core
(:meth:`~scheduler.core.state.SchedulerState.forget_finished`), and a restart loads only live
jobs and those finished within the window (:meth:`~scheduler.store.protocol.Store.load` with
``finished_after``). The store has every job; :class:`History` answers from it what memory no
longer holds, on a reader thread of its own (a read never waits behind a commit, and SQLite in
WAL mode and PostgreSQL both serve readers beside the writer):

- :meth:`History.find_job`: a job by id, from memory or else from the store;
- :meth:`History.list_jobs`: a listing, from the store (with the newer in-memory version of
  each listed job, as memory can be a commit ahead), since memory is not the whole history;
- :meth:`History.stored_submission`: the job of a (user, submission id) that memory no longer
  knows, so a repeated submission is still answered with its first job after the window.

All three go to the store only while memory is :attr:`History.partial` (this process forgot a
job, or the store had older history when it started); until then memory answers, as it always
did. Once partial, a submission with an id memory does not know costs one indexed read on the
reader thread.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from scheduler.core.errors import UnknownJobError
from scheduler.core.records import Job
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState
from scheduler.runtime import queries
from scheduler.runtime.queries import DEFAULT_JOB_PAGE, MAX_JOB_PAGE, Page

T = TypeVar("T")


class JobArchive(Protocol):
    """What :class:`History` reads from a :class:`~scheduler.store.protocol.Store`."""

    def get_job(self, job_id: str) -> Job | None:
        """The stored job, or ``None``."""
        ...

    def job_for_submission(self, user: str, submission_id: str) -> Job | None:
        """The job of a (user, submission id), or ``None``."""
        ...

    def list_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> _StorePage:
        """One page of stored jobs in submission order."""
        ...

    def count_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
    ) -> int:
        """How many stored jobs match."""
        ...

    def has_finished_before(self, at: datetime) -> bool:
        """Whether a stored job finished before ``at``."""
        ...


class _StorePage(Protocol):
    @property
    def jobs(self) -> tuple[Job, ...]: ...

    @property
    def next_page_token(self) -> str | None: ...


class History:
    """Reads of jobs memory may no longer hold (see the module docstring).

    Args:
        archive: the store.
        retention_s: how long finished jobs stay in memory.
        state: the core's live state (a callable: the core is rebuilt after a failed commit).
    """

    def __init__(
        self,
        archive: JobArchive,
        retention_s: float,
        state: Callable[[], SchedulerState],
    ) -> None:
        self._archive = archive
        self.retention = timedelta(seconds=retention_s)
        self._state = state
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")
        self.forgotten = 0
        """Jobs dropped from memory by this process."""
        self._older_in_store = True
        """Whether the store held jobs the start did not load (until :meth:`started`)."""
        self._next_sweep: datetime | None = None
        self._order = queries.JobOrder()

    @property
    def partial(self) -> bool:
        """Whether memory may miss a job the store has. While it does not, every read is
        answered from memory as before (no store round trip for a new submission id)."""
        return self.forgotten > 0 or self._older_in_store

    async def started(self, now: datetime) -> None:
        """After the core was loaded: ask the store whether it left history out. ``now`` is
        later than the load's cutoff, so any doubt counts as history left out."""
        cutoff = self.finished_after(now)
        self._older_in_store = await self._read(lambda: self._archive.has_finished_before(cutoff))

    def close(self) -> None:
        """Stop the reader thread."""
        self._reader.shutdown(wait=True)

    async def _read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    def sweep(self, state: SchedulerState, now: datetime) -> None:
        """Drop jobs finished before the window from memory (at most every so often)."""
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self.forgotten += len(state.forget_finished(now - self.retention))
        self._next_sweep = now + min(self.retention / 4, timedelta(seconds=60))

    def finished_after(self, now: datetime) -> datetime:
        """What a restart at ``now`` loads of the finished jobs: those since this instant."""
        return now - self.retention

    async def find_job(self, job_id: str) -> Job:
        """A job from memory, else from the store.

        Raises:
            UnknownJobError: neither has it.
        """
        job = self._state().jobs.get(job_id)
        if job is None and self.partial:
            job = await self._read(lambda: self._archive.get_job(job_id))
        if job is None:
            raise UnknownJobError(f"unknown job {job_id!r}")
        return job

    async def stored_submission(self, user: str, submission_id: str) -> Job | None:
        """The job of (``user``, ``submission_id``) when only the store still has it."""
        if not self.partial or self._state().job_for_submission(user, submission_id):
            return None  # memory has it, or memory has everything: the core answers
        job = await self._read(lambda: self._archive.job_for_submission(user, submission_id))
        if job is None or job.id in self._state().jobs:
            return None
        return job

    async def list_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str = "",
        user: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Job]:
        """Jobs matching the filters, oldest submission first, one page, from the store.

        Raises:
            InvalidInputError: ``invalid_page_token``.
        """
        if not self.partial:
            return queries.list_jobs(
                self._state(),
                states=states,
                queue=queue,
                user=user,
                page_size=page_size,
                page_token=page_token,
                order=self._order,
            )
        size = min(page_size or DEFAULT_JOB_PAGE, MAX_JOB_PAGE)
        wanted = tuple(states)

        def read() -> tuple[_StorePage, int]:
            page = self._archive.list_jobs(
                states=wanted,
                queue=queue or None,
                user=user or None,
                limit=size,
                page_token=page_token or None,
            )
            total = self._archive.count_jobs(states=wanted, queue=queue or None, user=user or None)
            return page, total

        page, total = await self._read(read)
        live = self._state().jobs
        items = []
        for job in page.jobs:
            newer = live.get(job.id)
            items.append(newer if newer is not None and newer.version > job.version else job)
        return Page(tuple(items), page.next_page_token or "", total)
