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
  their turn without using the loop; fetching the jobs, which may read the store on its own
  thread, is not held back), and yields to the loop every :data:`LIST_CHUNK` jobs, so a point
  read waits for one chunk at most, not for a page, however many list calls are in flight.
- The page is cut by size (``limits.MAX_LIST_RESPONSE_BYTES``) from the sizes of the memoised
  views, as it was cut from the sizes of freshly built messages before: the same pages, with
  the same tokens.

Only live records (those in the core's memory) are memoised: jobs read back from the store
(past their retention) are new records on every read, so their pages cost what they did
before, in chunks. Views of records that stopped being live (the job changed, or left memory)
are dropped in one pass once :data:`TRIM_SLACK` of them piled up, so the memo never keeps
records alive for long after the core let go of them.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
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
LIST_BUILDERS: Final = 1
"""List pages built at once; further list calls wait for it to finish (the loop is one thread:
building two at once is no faster, and a point read would wait for a chunk of each)."""
MAX_VIEWS: Final = 50_000
"""Jobs whose serialized views :class:`JobViews` keeps (about 1 KB each, plus the record they
were built from, which the core holds anyway while the job is live); beyond it the oldest
entries are dropped (they are rebuilt when next listed)."""
TRIM_SLACK: Final = 2_000
"""Views of records no longer live (a job changed or left memory since it was listed) that
:class:`JobViews` tolerates before dropping them all in one pass."""

_ANSWER_FIELDS: Final = ("as_of", "ettr")
"""Fields of the public view computed at the moment of the answer (not memoised)."""
_ETTR_SIZE: Final = jobs_pb2.Job(ettr=0.0).ByteSize()
"""Wire size of a set ``ettr`` (an optional double: the same for every value)."""


class JobViews:
    """Serialized public views of jobs, one per record (see the module docstring).

    Args:
        capacity: most jobs whose views are kept (oldest dropped first).
        slack: views of records that are no longer live tolerated before :meth:`trim` drops
            them.
    """

    def __init__(self, capacity: int = MAX_VIEWS, slack: int = TRIM_SLACK) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self._capacity = capacity
        self._slack = slack
        self._views: dict[str, tuple[Job, bytes]] = {}

    def __len__(self) -> int:
        return len(self._views)

    def static(self, job: Job, *, keep: bool = True) -> bytes:
        """The serialized view of ``job`` without the answer-time fields (``as_of``,
        ``ettr``): built once per record, then reused (not kept when ``keep`` is false)."""
        entry = self._views.get(job.id)
        if entry is not None and entry[0] is job:
            return entry[1]
        msg = job_to_proto(job, job.updated_at)
        for name in _ANSWER_FIELDS:
            msg.ClearField(name)
        data = msg.SerializeToString()
        if not keep:
            return data
        if entry is not None:
            del self._views[job.id]  # re-inserted last: the newest entry
        elif len(self._views) >= self._capacity:
            del self._views[next(iter(self._views))]
        self._views[job.id] = (job, data)
        return data

    def trim(self, live: Mapping[str, Job]) -> int:
        """Drop the views of records that are not the live ones (replaced since, or gone from
        memory), once the memo holds more than ``slack`` views beyond the live jobs' count;
        how many were dropped. A view holds its record, which must not outlive its job."""
        if len(self._views) <= len(live) + self._slack:
            return 0
        before = len(self._views)
        self._views = {k: v for k, v in self._views.items() if live.get(k) is v[0]}
        return before - len(self._views)


class _AnswerTime:
    """The answer-time fields of one response (its ``now``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        stamp = jobs_pb2.Job()
        set_time(stamp, "as_of", now)
        self.as_of = stamp.as_of
        self.as_of_size = stamp.ByteSize()

    def add(self, response: jobs_pb2.ListJobsResponse, job: Job, static: bytes) -> int:
        """Append ``job``'s full view to ``response``; its wire size (what
        ``job_to_proto(job, now).ByteSize()`` says)."""
        msg = response.jobs.add()
        msg.MergeFromString(static)
        msg.as_of.CopyFrom(self.as_of)
        size = len(static) + self.as_of_size
        ratio = ettr(job, self.now)
        if ratio is not None:
            msg.ettr = ratio
            size += _ETTR_SIZE
        return size


class JobPages:
    """Answers list calls from memoised views, a bounded number at a time, in chunks.

    Args:
        views: the memo (a new one by default).
        live: the jobs in the core's memory: only their records are memoised (a record read
            from the store is new at every read), and views of other records are trimmed.
            ``None``: every record is memoised and nothing trimmed.
        builders: pages built at once.
        chunk: jobs handled per turn of the event loop.
    """

    def __init__(
        self,
        views: JobViews | None = None,
        *,
        live: Callable[[], Mapping[str, Job]] | None = None,
        builders: int = LIST_BUILDERS,
        chunk: int = LIST_CHUNK,
    ) -> None:
        self.views = views or JobViews()
        self._live = live
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
        page = await fetch(page_size)
        response, fits = await self._build(page, now, max_bytes)
        if response is None:
            # Over the size budget: ask again for only the jobs that fit, so the next page
            # token is the source's own (memory or store).
            page = await fetch(fits)
            response, _ = await self._build(page, now, 0)
        if response is None:  # pragma: no cover - a build without a budget is never cut
            raise RuntimeError("a page without a size budget was cut")
        return response

    async def _build(
        self, page: Page[Job], now: Callable[[], datetime], max_bytes: int
    ) -> tuple[jobs_pb2.ListJobsResponse | None, int]:
        """The response holding ``page`` and its job count, built once no more than
        ``builders - 1`` other pages are, a chunk of jobs per turn of the event loop; or
        ``None`` and the count of jobs that fit, once the full views add up to more than
        ``max_bytes`` (when positive; the first job always fits)."""
        async with self._gate:
            return await self._build_now(page, _AnswerTime(now()), max_bytes)

    async def _build_now(
        self, page: Page[Job], at: _AnswerTime, max_bytes: int
    ) -> tuple[jobs_pb2.ListJobsResponse | None, int]:
        response = jobs_pb2.ListJobsResponse(next_page_token=page.next_token, total_size=page.total)
        live = None if self._live is None else self._live()
        total = 0
        for i, job in enumerate(page.items):
            if i and i % self._chunk == 0:
                await asyncio.sleep(0)  # let other requests in (records are immutable)
                live = None if self._live is None else self._live()
            keep = live is None or live.get(job.id) is job
            total += at.add(response, job, self.views.static(job, keep=keep))
            if 0 < max_bytes < total and i > 0:
                return None, i
        if live is not None:
            self.views.trim(live)
        return response, len(page.items)
