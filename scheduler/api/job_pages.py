"""``ListJobs`` answers built from memoised job views, without starving other requests.

Building the public view of a job (:func:`~scheduler.api.serde.job_to_proto`) costs about
70 us, so a 1,000-job page took 70 ms of the server's one event loop, and a flood of list
calls (issue 10) left ``GetJob`` waiting behind them. Three things keep a page cheap and fair:

- :class:`JobViews` memoises each job's view, serialized, per record. Records are immutable
  and replaced on every change, so a record's view is fixed except for the fields computed at
  the moment of the answer (``as_of``, and ``ettr`` while the job runs); the memo holds the view
  without those, keyed by job id and checked by identity against the record it was built from
  (a changed job is a new record, so it gets a new view). A page is then, per job, a parse of
  cached bytes into the response (a few microseconds) plus those two fields.
- :class:`JobPages` builds at most :data:`LIST_BUILDERS` pages at once (later list calls wait
  their turn without using the loop), and yields to the loop every :data:`LIST_CHUNK` jobs, so
  a point read waits for one chunk at most, not for a page.
- The page is cut by size (``limits.MAX_LIST_RESPONSE_BYTES``) from the sizes of the memoised
  views, as it was cut from the sizes of freshly built messages before: the same pages, with
  the same tokens.

Jobs read back from the store (past their retention) are new records on every read, so they
miss the memo; their pages cost what they did before, in chunks.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final

from firsthop.v1 import jobs_pb2
from scheduler.api.serde import job_to_proto
from scheduler.api.spec_serde import set_time
from scheduler.core.records import Job
from scheduler.core.status import ettr
from scheduler.runtime.queries import Page

LIST_CHUNK: Final = 100
"""Jobs handled per turn of the event loop when a list is answered: other requests wait for
one chunk at most, never for a whole page."""
LIST_BUILDERS: Final = 2
"""List pages built at once; further list calls wait for one of them to finish."""
MAX_VIEWS: Final = 50_000
"""Jobs whose serialized views :class:`JobViews` keeps (about 1 KB each); beyond it the
oldest entries are dropped (they are rebuilt when next listed)."""

_ANSWER_FIELDS: Final = ("as_of", "ettr")
"""Fields of the public view computed at the moment of the answer (not memoised)."""


class JobViews:
    """Serialized public views of jobs, one per record (see the module docstring).

    Args:
        capacity: most jobs whose views are kept (oldest dropped first).
    """

    def __init__(self, capacity: int = MAX_VIEWS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self._capacity = capacity
        self._views: dict[str, tuple[Job, bytes]] = {}

    def __len__(self) -> int:
        return len(self._views)

    def static(self, job: Job) -> bytes:
        """The serialized view of ``job`` without the answer-time fields (``as_of``,
        ``ettr``): built once per record, then reused."""
        entry = self._views.get(job.id)
        if entry is not None and entry[0] is job:
            return entry[1]
        msg = job_to_proto(job, job.updated_at)
        for name in _ANSWER_FIELDS:
            msg.ClearField(name)
        data = msg.SerializeToString()
        if entry is not None:
            del self._views[job.id]  # re-inserted last: the newest entry
        elif len(self._views) >= self._capacity:
            del self._views[next(iter(self._views))]
        self._views[job.id] = (job, data)
        return data


class _AnswerTime:
    """The answer-time fields of one response (its ``now``) and their wire sizes."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        stamp = jobs_pb2.Job()
        set_time(stamp, "as_of", now)
        self.as_of = stamp.as_of
        self.as_of_size = stamp.ByteSize()

    def size(self, job: Job, static: bytes) -> int:
        """The wire size of ``job``'s full view (what ``job_to_proto(job, now).ByteSize()``
        says), from its memoised part."""
        ratio = ettr(job, self.now)
        extra = 0 if ratio is None else jobs_pb2.Job(ettr=ratio).ByteSize()
        return len(static) + self.as_of_size + extra

    def add(self, response: jobs_pb2.ListJobsResponse, job: Job, static: bytes) -> None:
        """Append ``job``'s full view to ``response``."""
        msg = response.jobs.add()
        msg.MergeFromString(static)
        ratio = ettr(job, self.now)
        if ratio is not None:
            msg.ettr = ratio
        msg.as_of.CopyFrom(self.as_of)


class JobPages:
    """Answers list calls from memoised views, a bounded number at a time, in chunks.

    Args:
        views: the memo (a new one by default).
        builders: pages built at once.
        chunk: jobs handled per turn of the event loop.
    """

    def __init__(
        self,
        views: JobViews | None = None,
        *,
        builders: int = LIST_BUILDERS,
        chunk: int = LIST_CHUNK,
    ) -> None:
        self.views = views or JobViews()
        self._gate = asyncio.Semaphore(builders)
        self._chunk = chunk

    async def answer(
        self,
        fetch: Callable[[int], Awaitable[Page[Job]]],
        page_size: int,
        now: Callable[[], datetime],
        max_bytes: int,
    ) -> jobs_pb2.ListJobsResponse:
        """The response for one list call.

        Args:
            fetch: a page of jobs of (up to) the given size from the source (memory or store).
            page_size: the page size asked for.
            now: the server's clock; read once the page is fetched.
            max_bytes: the most bytes of jobs a response holds (at least one job).
        """
        async with self._gate:
            page = await fetch(page_size)
            at = _AnswerTime(now())
            views = await self._views_of(page.items, at)
            fits = _fitting([size for _, _, size in views], max_bytes)
            if fits < len(page.items):
                # Over the size budget: ask again for only the jobs that fit, so the next page
                # token is the source's own (memory or store).
                page = await fetch(fits)
                at = _AnswerTime(now())
                views = await self._views_of(page.items, at)
            response = jobs_pb2.ListJobsResponse(
                next_page_token=page.next_token, total_size=page.total
            )
            for i, (job, static, _) in enumerate(views):
                if i and i % self._chunk == 0:
                    await asyncio.sleep(0)  # let other requests in (records are immutable)
                at.add(response, job, static)
            return response

    async def _views_of(self, jobs: Sequence[Job], at: _AnswerTime) -> list[tuple[Job, bytes, int]]:
        """Each job with its memoised view and the size of its full view, a chunk of jobs per
        turn of the event loop."""
        out: list[tuple[Job, bytes, int]] = []
        for i, job in enumerate(jobs):
            if i and i % self._chunk == 0:
                await asyncio.sleep(0)
            static = self.views.static(job)
            out.append((job, static, at.size(job, static)))
        return out


def _fitting(sizes: Sequence[int], max_bytes: int) -> int:
    """How many of the items of ``sizes``, from the first, fit in ``max_bytes`` (at least
    one)."""
    total = 0
    for i, size in enumerate(sizes):
        total += size
        if total > max_bytes and i > 0:
            return i
    return len(sizes)
