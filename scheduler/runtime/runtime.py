"""The asyncio runtime that owns the scheduling core: one event at a time, durable before acked.

Every request that changes state becomes an event *factory* queued here. One consumer task
takes the queue in batches (group commit):

1. for each queued factory, stamp the time (the runtime's clock, never going back), build the
   event and call :meth:`Scheduler.handle` on it, one at a time; an event the core refuses
   (a :class:`~topology.errors.FirsthopError`) changes nothing and fails only its caller;
2. merge the :class:`~scheduler.core.actions.PersistChanges` of the whole batch and commit them
   to the store in one transaction, on the store's own thread;
3. only then answer the callers, publish the changed jobs to ``WatchJob`` streams and send the
   agent commands (stops before starts, in the order the core gave them).

Commits are pipelined, one in flight: while batch N commits on the store's thread, batch N+1
is collected and applied to the core (step 1), and it commits as soon as N is durable. So the
event loop never idles behind an fsync, and batches grow with the commit time.

If a commit fails, its callers get ``store_unavailable`` and the core is rebuilt from the
store; the batch applied on top of the refused one is refused too (without being committed),
so memory never runs ahead of what is durable by more than two batches and never keeps a
refused change. Reads (``GetJob``, ``ListJobs``...) look at the in-memory state and may see
the batches being committed.

A ticker queues :class:`~scheduler.core.events.TimerFired` every ``tick_interval_s`` after the
previous tick was handled (ticks never pile up); its handling time is the scheduling cycle time
metric. With a :class:`~scheduler.runtime.placement_worker.PlacementWorker` (the core
configured with ``defer_placement``), a cycle that stops for placements it does not know has
them computed in the worker process while the loop serves requests; they come back as a
:class:`~scheduler.core.events.PlacementsProposed` event, which runs the next cycle at once. A
cycle that admitted jobs but stopped at its budget (``truncated``: it admits at most so many
GPUs per cycle, to keep each commit small) is followed by the next one at once, queued behind
whatever requests arrived meanwhile.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from firsthop.reasons import ErrorReason
from scheduler.core.actions import (
    Action,
    ChangeSet,
    NotifyJobChanged,
    NotifyNodeChanged,
    PersistChanges,
    RunMaintenance,
    StartRanks,
    StopRanks,
)
from scheduler.core.campaign_records import TERMINAL_CAMPAIGN_STATES, Campaign
from scheduler.core.clock import Clock
from scheduler.core.errors import UnknownJobError, UnknownNodeError
from scheduler.core.events import Event, PlacementsProposed, SchedulerStarted, TimerFired
from scheduler.core.proposals import PlacementWork
from scheduler.core.records import Job, Node, Queue
from scheduler.core.scheduler import Scheduler
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState
from scheduler.runtime import queries
from scheduler.runtime.agents import AgentHub, ShuttingDownError
from scheduler.runtime.history import History, JobArchive
from scheduler.runtime.metrics import Metrics, StateSnapshot
from scheduler.runtime.placement_worker import PlacementWorker
from scheduler.runtime.queries import Page
from scheduler.runtime.watch import WatchHub
from topology.errors import FirsthopError

T = TypeVar("T")

EventFactory = Callable[[datetime], Event]
"""Builds the event once its time is known (stamped when it is handled)."""

_log = logging.getLogger(__name__)


class StoreUnavailableError(FirsthopError):
    """The store did not accept a commit; nothing of the request was kept."""

    status_code = "UNAVAILABLE"
    default_reason = ErrorReason.STORE_UNAVAILABLE


class DeposedError(FirsthopError):
    """The store fenced this scheduler off: a newer leader took over."""

    status_code = "UNAVAILABLE"
    default_reason = ErrorReason.NOT_LEADER


class DurableStore(Protocol):
    """What the runtime needs of a :class:`~scheduler.store.protocol.Store`."""

    def save(self, changes: ChangeSet) -> None:
        """Make ``changes`` durable in one transaction (raise if not)."""
        ...


CoreFactory = Callable[[], Scheduler]
"""Builds a core from what the store holds (at start, and after a failed commit)."""


@dataclass(eq=False, slots=True)
class _Item:
    make: EventFactory
    result: Callable[[Event], Any] | None
    future: asyncio.Future[Any] | None


@dataclass(slots=True)
class _Handled:
    """A batch applied to the core: what to commit, then do, then answer."""

    changes: ChangeSet
    effects: list[Action]
    outcomes: list[tuple[_Item, Any]]


class Runtime:
    """Owns the core, the store's thread, the watchers and the agent hub."""

    def __init__(
        self,
        build_core: CoreFactory,
        store: DurableStore,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
        tick_interval_s: float = 1.0,
        max_batch: int = 512,
        archive: JobArchive | None = None,
        retention_s: float | None = None,
        placement_worker: PlacementWorker | None = None,
    ) -> None:
        self._build_core = build_core
        self._worker = placement_worker
        self._placing: asyncio.Task[None] | None = None
        self.history = (
            History(archive, retention_s, lambda: self.state)
            if archive is not None and retention_s is not None
            else None
        )
        """Finished jobs past ``retention_s`` live in the store only (``None``: all in memory)."""
        self._store = store
        self._clock = clock
        self.metrics = metrics or Metrics()
        self._job_order = queries.JobOrder()
        self.watchers = WatchHub()
        self.agents = AgentHub()
        self._tick_s = tick_interval_s
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._tasks: list[asyncio.Task[None]] = []
        self._core: Scheduler | None = None
        self._last_at: datetime | None = None
        self._closing = False
        self.on_actions: list[Callable[[Action], None]] = []
        """Extra observers of executed actions (the agent layer registers here)."""
        self.ticks = 0
        self._ticked = asyncio.Condition()
        self._cycle_again = asyncio.Event()
        self.deposed = False
        """Set when the store refused a commit with ``not_leader``: a newer leader took over."""
        self.on_deposed: list[Callable[[], None]] = []
        """Called once the store fenced this runtime off (the server steps down)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the core from the store, announce the (re)start, begin ticking."""
        self._core = await self.in_store_thread(self._build_core)
        if self.history is not None:
            await self.history.started(self._clock.now())
        self._tasks.append(asyncio.create_task(self._consume(), name="runtime consumer"))
        await self.apply(lambda at: SchedulerStarted(at=at))
        self._tasks.append(asyncio.create_task(self._tick(), name="runtime ticker"))
        if self._worker is not None:
            self._tasks.append(asyncio.create_task(self._worker.start(), name="placement worker"))
        self.metrics.up.set(1)

    def close_streams(self) -> None:
        """End agent and watch streams (first step of a shutdown; requests still work)."""
        self.agents.close_all()
        self.watchers.close_all()

    async def stop(self) -> None:
        """Stop taking events, finish the queued ones, stop the tasks and the store thread."""
        if self._closing:
            return
        self._closing = True
        self.metrics.up.set(0)
        for task in self._tasks[1:]:
            task.cancel()
        if self._tasks:
            await self._queue.join()
            self._tasks[0].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._placing is not None:
            self._placing.cancel()
            await asyncio.gather(self._placing, return_exceptions=True)
        if self._worker is not None:
            await self._worker.close()
        self._store_thread.shutdown(wait=True)
        if self.history is not None:
            self.history.close()

    async def in_store_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the store's thread (every store call goes through this one thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, fn)

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> SchedulerState:
        """The core's live state (do not mutate)."""
        if self._core is None:
            raise ShuttingDownError("the scheduler is not started")
        return self._core.state

    @property
    def core(self) -> Scheduler:
        """The core (queries only; changes go through :meth:`apply`)."""
        if self._core is None:
            raise ShuttingDownError("the scheduler is not started")
        return self._core

    def now(self) -> datetime:
        """The runtime's current time."""
        return self._clock.now()

    def get_job(self, job_id: str) -> Job:
        """A job by id (``unknown_job`` when none)."""
        job = self.state.jobs.get(job_id)
        if job is None:
            raise UnknownJobError(f"unknown job {job_id!r}")
        return job

    def get_node(self, name: str) -> Node:
        """A node by name (``unknown_node`` when the topology has no such host)."""
        node = self.state.nodes.get(name)
        if node is None:
            raise UnknownNodeError(f"unknown node {name!r} (not a host of the topology)")
        return node

    async def find_job(self, job_id: str) -> Job:
        """A job by id, from memory or, past its retention, from the store.

        Raises:
            UnknownJobError: no such job.
        """
        if self.history is None:
            return self.get_job(job_id)
        return await self.history.find_job(job_id)

    async def list_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str = "",
        user: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Job]:
        """A page of jobs (from the store once memory no longer holds the whole history)."""
        if self.history is None:
            return queries.list_jobs(
                self.state,
                states=states,
                queue=queue,
                user=user,
                page_size=page_size,
                page_token=page_token,
                order=self._job_order,
            )
        return await self.history.list_jobs(
            states=states, queue=queue, user=user, page_size=page_size, page_token=page_token
        )

    async def stored_submission(self, user: str, submission_id: str | None) -> Job | None:
        """The job of a repeated submission that only the store still has, if any."""
        if self.history is None or submission_id is None:
            return None
        return await self.history.stored_submission(user, submission_id)

    def new_job_id(self) -> str:
        """A fresh job id: ``j-`` and 12 random hex digits, not used by a job in memory.

        Jobs past their retention are not checked: with a million of them a clash has odds of
        about 4e-9 per submission, and the store would refuse it (the caller retries)."""
        while True:
            job_id = f"j-{secrets.token_hex(6)}"
            if job_id not in self.state.jobs:
                return job_id

    # ------------------------------------------------------------------ writing

    async def apply(
        self, make: EventFactory, result: Callable[[Event], T] | None = None
    ) -> T | None:
        """Queue an event; return once it is handled and durable.

        Args:
            make: Builds the event from the time it is handled at.
            result: Computed right after the event is handled (before the commit), from the
                state of that moment; its value is returned once the commit succeeded.

        Raises:
            FirsthopError: the core refused the event (nothing changed), or the store failed
                (``store_unavailable``), or the server is stopping (``shutting_down``).
        """
        if self._closing:
            raise ShuttingDownError("the scheduler is shutting down")
        if self.deposed:
            raise DeposedError("this scheduler is no longer the leader")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(make, result, future))
        value: T | None = await future
        return value

    def post(self, make: EventFactory) -> None:
        """Queue an event nobody waits for (heartbeats); errors are logged, not raised."""
        if not self._closing and not self.deposed:
            self._queue.put_nowait(_Item(make, None, None))

    async def _consume(self) -> None:
        previous: asyncio.Task[None] | None = None
        while True:
            batch = [await self._queue.get()]
            # One turn of the loop lets RPCs that are already readable queue their events, so
            # a burst commits as one transaction instead of one per request.
            await asyncio.sleep(0)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            core = self.core
            try:
                handled = self._handle(core, batch)
            except Exception:  # a bug in the runtime itself: keep serving, loudly
                _log.exception("runtime batch failed")
                handled = _Handled(
                    ChangeSet(),
                    [],
                    [(i, StoreUnavailableError("internal error; see the log")) for i in batch],
                )
            # One commit in flight: this batch was handled while the previous one committed;
            # it commits once that one is durable (or refused).
            if previous is not None:
                await previous
            previous = asyncio.create_task(self._finish(core, batch, handled))

    def _stamp(self) -> datetime:
        now = self._clock.now()
        if self._last_at is not None and now < self._last_at:
            now = self._last_at
        self._last_at = now
        return now

    def _handle(self, core: Scheduler, batch: list[_Item]) -> _Handled:
        """Apply a batch's events to the core, one at a time; what to commit and do after."""
        jobs: dict[str, Job] = {}
        nodes: dict[str, Node] = {}
        queues: dict[str, Queue] = {}
        campaigns: dict[str, Campaign] = {}
        effects: list[Action] = []
        outcomes: list[tuple[_Item, Any]] = []
        for item in batch:
            try:
                event = item.make(self._stamp())
                started = time.perf_counter()
                actions = core.handle(event)
                if isinstance(event, TimerFired | PlacementsProposed):
                    self.metrics.cycle_seconds.observe(time.perf_counter() - started)
                    self._cycled(core, event)
                    if self.history is not None and isinstance(event, TimerFired):
                        self.history.sweep(core.state, event.at)
                self.metrics.event_counts(type(event).__name__).inc()
                value = item.result(event) if item.result is not None else None
            except FirsthopError as exc:
                if item.future is None:
                    _log.debug("event refused: %s: %s", exc.reason, exc)
                outcomes.append((item, exc))
                continue
            except Exception as exc:
                _log.exception("the core failed on an event")
                outcomes.append((item, exc))
                continue
            for action in actions:
                if isinstance(action, PersistChanges):
                    # The newest version of each record wins (ChangeSet.merged, without
                    # copying the batch's changes once per event).
                    part = action.changes
                    jobs.update((j.id, j) for j in part.jobs)
                    nodes.update((n.name, n) for n in part.nodes)
                    queues.update((q.name, q) for q in part.queues)
                    campaigns.update((c.name, c) for c in part.campaigns)
                else:
                    effects.append(action)
            outcomes.append((item, value))
        changes = ChangeSet(
            tuple(jobs.values()),
            tuple(nodes.values()),
            tuple(queues.values()),
            tuple(campaigns.values()),
        )
        return _Handled(changes, effects, outcomes)

    def _cycled(self, core: Scheduler, event: TimerFired | PlacementsProposed) -> None:
        cycle = core.last_cycle
        if cycle is None:
            return
        if isinstance(event, PlacementsProposed):
            used = cycle.proposals_used
            self.metrics.proposals.labels("used").inc(used)
            self.metrics.proposals.labels("unused").inc(max(0, len(event.proposals) - used))
        if cycle.work is not None:
            self._place_off_loop(cycle.work)
        elif cycle.truncated and cycle.admitted:
            self._cycle_again.set()  # more admissions wait: next cycle at once

    def _place_off_loop(self, work: PlacementWork) -> None:
        """Have the worker place what the cycle stopped for (one piece of work at a time:
        the cycle its proposals run asks again for whatever is still missing)."""
        if self._worker is None:
            _log.error("the core defers placement but the runtime has no placement worker")
            return
        if self._placing is not None and not self._placing.done():
            return
        self._placing = asyncio.create_task(self._place(self._worker, work), name="placing")

    async def _place(self, worker: PlacementWorker, work: PlacementWork) -> None:
        started = time.perf_counter()
        try:
            proposals = tuple(await worker.propose(work))
        except Exception:  # a bug in the placer: keep serving, loudly; the next tick retries
            _log.exception("placement worker failed")
            return
        self.metrics.placement_work_seconds.observe(time.perf_counter() - started)
        self.post(lambda at: PlacementsProposed(at=at, proposals=proposals))

    async def _finish(self, core: Scheduler, batch: list[_Item], handled: _Handled) -> None:
        """Commit a handled batch, then answer its callers and run its actions."""
        try:
            if self.deposed:
                for item in batch:
                    _settle(item.future, DeposedError("this scheduler is no longer the leader"))
                return
            if core is not self._core:
                # An earlier commit failed and the core was reloaded from the store: this
                # batch was computed on top of the refused change, so it is refused too.
                error = StoreUnavailableError("an earlier change was refused by the store")
                for item, _ in handled.outcomes:
                    _settle(item.future, error)
                return
            await self._commit(handled)
        except Exception:  # a bug in the runtime itself: keep serving, loudly
            _log.exception("runtime batch failed")
            for item in batch:
                _settle(item.future, StoreUnavailableError("internal error; see the log"))
        finally:
            for _ in batch:
                self._queue.task_done()

    async def _commit(self, handled: _Handled) -> None:
        changes, outcomes = handled.changes, handled.outcomes
        # Commands to agents are fenced like writes: a batch that sends any goes through the
        # store even when it changes nothing stored (a leader's store checks its epoch then).
        if changes or any(
            isinstance(a, StartRanks | StopRanks | RunMaintenance) for a in handled.effects
        ):
            started = time.perf_counter()
            try:
                await self.in_store_thread(lambda: self._store.save(changes))
            except Exception as exc:
                if isinstance(exc, FirsthopError) and exc.reason == ErrorReason.NOT_LEADER:
                    self._fenced_off(exc, outcomes)
                    return
                _log.exception("store commit failed; reloading the core from the store")
                error = StoreUnavailableError(f"the store did not accept the change: {exc}")
                try:
                    # Reload before answering, so no caller sees the state that was refused.
                    await self._reload()
                finally:
                    for item, _ in outcomes:
                        _settle(item.future, error)
                return
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            for job in changes.jobs:
                self.watchers.publish(job)
        for action in handled.effects:
            self._execute(action)
        for item, value in outcomes:
            _settle(item.future, value)

    def _fenced_off(self, exc: FirsthopError, outcomes: list[tuple[_Item, Any]]) -> None:
        # Deposed: a newer leader owns the store. Nothing of the batch happened; send
        # nothing, take no more events, and let the server step down.
        _log.error("store write fenced off (%s); stepping down", exc)
        self.deposed = True
        for item, _ in outcomes:
            _settle(item.future, exc)
        for observer in self.on_deposed:
            observer()

    async def _reload(self) -> None:
        self._core = await self.in_store_thread(self._build_core)
        at = self._stamp()
        actions = self._core.handle(SchedulerStarted(at=at))
        persist = [a.changes for a in actions if isinstance(a, PersistChanges)]
        for change in persist:
            await self.in_store_thread(lambda c=change: self._store.save(c))  # type: ignore[misc]
        for action in actions:
            if not isinstance(action, PersistChanges):
                self._execute(action)

    def _execute(self, action: Action) -> None:
        if isinstance(action, StartRanks | StopRanks):
            self.agents.send(action)
            self.metrics.command_counts("start" if isinstance(action, StartRanks) else "stop").inc()
        elif isinstance(action, RunMaintenance):
            self.agents.send(action)
            self.metrics.command_counts("maintenance").inc()
        elif isinstance(action, NotifyJobChanged):
            job = action.job
            if job.state is JobState.ADMITTED and job.allocation is not None:
                alloc = job.allocation
                if alloc.lower_bound > 0:
                    self.metrics.placement_cost_ratio.observe(alloc.cost / alloc.lower_bound)
        elif isinstance(action, NotifyNodeChanged):
            pass
        for observer in self.on_actions:
            observer(action)

    # ------------------------------------------------------------------ ticking

    async def _tick(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cycle_again.wait(), self._tick_s)
            self._cycle_again.clear()
            try:
                await self.apply(lambda at: TimerFired(at=at))
            except FirsthopError as exc:
                _log.warning("tick failed: %s", exc)
            self.ticks += 1
            self.metrics.set_snapshot(
                snapshot_of(self.state, self.agents.connected, self.core.campaigns.all.values())
            )
            async with self._ticked:
                self._ticked.notify_all()

    async def next_tick(self) -> None:
        """Return after the next tick was handled (tests and tools wait on this)."""
        async with self._ticked:
            await self._ticked.wait()


def _settle(future: asyncio.Future[Any] | None, outcome: Any) -> None:
    if future is None or future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def snapshot_of(
    state: SchedulerState, agents_connected: int, campaigns: Iterable[Campaign] = ()
) -> StateSnapshot:
    """Whole-state counts for the metrics endpoint (campaigns: the live ones)."""
    live = [c for c in campaigns if c.state not in TERMINAL_CAMPAIGN_STATES]
    campaign_hosts: dict[str, dict[str, int]] = {}
    for campaign in live:
        counts = campaign_hosts.setdefault(campaign.name, {})
        for entry in campaign.hosts:
            counts[entry.phase.value] = counts.get(entry.phase.value, 0) + 1
    depth = {queue: len(keys) for queue, keys in state.pending.items()}
    jobs: dict[str, int] = {}
    for job in state.jobs.values():
        jobs[job.state.value] = jobs.get(job.state.value, 0) + 1
    nodes: dict[str, int] = {}
    for node in state.nodes.values():
        nodes[node.state.value] = nodes.get(node.state.value, 0) + 1
    busy = int(state.busy.sum())
    usable = state.usable_hosts()
    index = state.index
    free_per_host = index.free_gpus_per_host(state.busy)
    free = int(free_per_host[usable].sum())
    total = int(index.num_gpus)
    return StateSnapshot(
        queue_depth=depth,
        jobs_by_state=jobs,
        nodes_by_state=nodes,
        gpus_allocated=busy,
        gpus_free=free,
        gpus_unavailable=total - busy - free,
        agents_connected=agents_connected,
        campaign_hosts=campaign_hosts,
        campaign_jobs={c.name: (len(c.jobs_moved), len(c.jobs_waited)) for c in live},
        campaign_gpu_hours_lost={c.name: c.gpu_hours_lost for c in live},
    )
