"""Feeds ``WatchJob`` streams: every durable change of a job reaches its watchers in order.

The runtime publishes a job after the change is durable; each watcher has its own bounded
queue. A watcher that falls behind by more than its queue holds is not allowed to stall the
scheduler: it skips to the newest version (intermediate versions are dropped, never
reordered), which is what a progress view needs.

Must not import grpc, generated protos, ``scheduler.api`` or ``scheduler.store``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from scheduler.core.records import Job
from scheduler.core.states import is_terminal
from scheduler.runtime.agents import ShuttingDownError

QUEUE_SIZE: Final = 64


class JobWatch:
    """One watcher's view: an async iterator of job versions ending with a terminal one."""

    def __init__(self, hub: WatchHub, job_id: str) -> None:
        self._hub = hub
        self.job_id = job_id
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue(QUEUE_SIZE)
        self._latest: Job | None = None
        self._closed = False

    def offer(self, job: Job) -> None:
        """Hand a new version to this watcher (never blocks)."""
        if self._closed:
            return
        if self._queue.full():
            # Keep the newest; the watcher sees it once it catches up.
            self._latest = job
            return
        self._queue.put_nowait(job)

    def end(self) -> None:
        """End the stream from the server side (shutdown): :meth:`updates` raises."""
        self._closed = True
        self._latest = None
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def close(self) -> None:
        """Stop watching (called when the stream ends)."""
        self._closed = True
        self._hub.unsubscribe(self)

    async def updates(self, first: Job) -> AsyncIterator[Job]:
        """``first``, then every newer version, until one is terminal."""
        last = first
        yield first
        while not is_terminal(last.state):
            job = await self._queue.get()
            if job is None:
                raise ShuttingDownError("the scheduler is shutting down; watch again")
            if self._latest is not None and self._queue.empty():
                job, self._latest = self._latest, None
            if job.version <= last.version:
                continue
            last = job
            yield job


class WatchHub:
    """Watchers by job id."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[JobWatch]] = {}

    def subscribe(self, job_id: str) -> JobWatch:
        """A new watcher of ``job_id`` (subscribe before reading the current version)."""
        watch = JobWatch(self, job_id)
        self._watchers.setdefault(job_id, set()).add(watch)
        return watch

    def unsubscribe(self, watch: JobWatch) -> None:
        """Forget a watcher."""
        group = self._watchers.get(watch.job_id)
        if group is None:
            return
        group.discard(watch)
        if not group:
            del self._watchers[watch.job_id]

    def publish(self, job: Job) -> None:
        """A durable new version of ``job``."""
        for watch in tuple(self._watchers.get(job.id, ())):
            watch.offer(job)

    def close_all(self) -> None:
        """End every watch stream (server shutdown)."""
        for group in list(self._watchers.values()):
            for watch in tuple(group):
                watch.end()

    @property
    def watchers(self) -> int:
        """Open watchers over all jobs."""
        return sum(len(group) for group in self._watchers.values())
