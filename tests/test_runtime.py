"""The runtime without a network: one event at a time, group commit, durable before the answer,
reload after a failed commit, watchers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import replace
from datetime import datetime

import pytest
from server_builders import small_topology, spec

from scheduler.core.actions import ChangeSet
from scheduler.core.clock import ManualClock
from scheduler.core.config import SchedulerConfig
from scheduler.core.errors import UnknownQueueError
from scheduler.core.events import Event, JobSubmitted, NodeRegistered, TimerFired
from scheduler.core.records import Job
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import JobState
from scheduler.runtime.agents import ShuttingDownError
from scheduler.runtime.runtime import Runtime, StoreUnavailableError
from scheduler.runtime.watch import WatchHub
from scheduler.store.memory import MemoryStore


class RecordingStore(MemoryStore):
    """A memory store that counts commits and can be told to fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[ChangeSet] = []
        self.fail = False

    def save(self, changes: ChangeSet) -> None:
        if self.fail:
            raise OSError("disk full")
        super().save(changes)
        self.saves.append(changes)


def _runtime(store: RecordingStore) -> Runtime:
    index = small_topology().index

    def build() -> Scheduler:
        stored = store.load()
        return Scheduler(index, jobs=stored.jobs, nodes=stored.nodes, queues=stored.queues)

    return Runtime(build, store, ManualClock(), tick_interval_s=3600)


def _submit(job_id: str, queue: str = "default") -> object:
    def make(at: datetime) -> Event:
        return JobSubmitted(at=at, job_id=job_id, spec=spec(8, queue=queue), user="u")

    return make


async def test_events_commit_in_groups_and_are_durable_before_the_answer() -> None:
    store = RecordingStore()
    runtime = _runtime(store)
    await runtime.start()
    try:
        saves_before = len(store.saves)
        results = await asyncio.gather(
            *(
                runtime.apply(_submit(f"j-{i}"), lambda e: store.get_job(e.job_id))  # type: ignore[arg-type, attr-defined]
                for i in range(50)
            )
        )
        durable = [store.get_job(f"j-{i}") for i in range(50)]
    finally:
        await runtime.stop()

    # The result is computed before the commit, so the store did not have the job yet...
    assert results == [None] * 50
    # ...and by the time apply() returned it did, in far fewer transactions than events.
    assert all(job is not None and job.state is JobState.PENDING for job in durable)
    assert len(store.saves) - saves_before < 10


async def test_a_refused_event_fails_only_its_caller() -> None:
    runtime = _runtime(RecordingStore())
    await runtime.start()
    try:
        good, bad = await asyncio.gather(
            runtime.apply(_submit("j-good"), lambda e: runtime.state.jobs["j-good"]),  # type: ignore[arg-type]
            runtime.apply(_submit("j-bad", queue="nope")),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    finally:
        await runtime.stop()

    assert isinstance(good, Job)
    assert isinstance(bad, UnknownQueueError)
    assert "j-bad" not in runtime.state.jobs


async def test_a_failed_commit_is_reported_and_memory_reloads_from_the_store() -> None:
    store = RecordingStore()
    runtime = _runtime(store)
    await runtime.start()
    try:
        store.fail = True
        with pytest.raises(StoreUnavailableError) as info:
            await runtime.apply(_submit("j-lost"))  # type: ignore[arg-type]
        lost_in_memory = "j-lost" in runtime.state.jobs
        store.fail = False
        await runtime.apply(_submit("j-kept"))  # type: ignore[arg-type]
    finally:
        await runtime.stop()

    assert info.value.reason == "store_unavailable"
    assert not lost_in_memory
    assert store.get_job("j-lost") is None
    assert store.get_job("j-kept") is not None


class GatedStore(RecordingStore):
    """Holds each commit until the test opens the gate (commits run on the store thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def save(self, changes: ChangeSet) -> None:
        self.waiting.set()
        self.gate.wait(10)
        super().save(changes)


async def test_the_next_batch_is_handled_during_a_commit_and_refused_if_that_commit_fails() -> None:
    store = GatedStore()
    runtime = _runtime(store)
    await runtime.start()
    try:
        store.gate.clear()
        store.waiting.clear()
        store.fail = True
        first = asyncio.ensure_future(runtime.apply(_submit("j-first")))  # type: ignore[arg-type]
        await asyncio.to_thread(store.waiting.wait, 10)  # its commit is on the store thread
        second = asyncio.ensure_future(runtime.apply(_submit("j-second")))  # type: ignore[arg-type]
        deadline = asyncio.get_running_loop().time() + 10
        while "j-second" not in runtime.state.jobs:  # handled while the first one commits
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        store.gate.set()
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        in_memory = {"j-first", "j-second"} & set(runtime.state.jobs)
        store.fail = False
        await runtime.apply(_submit("j-third"))  # type: ignore[arg-type]
    finally:
        store.gate.set()
        await runtime.stop()

    assert [getattr(o, "reason", None) for o in outcomes] == ["store_unavailable"] * 2
    assert not in_memory  # the core was reloaded without either
    assert store.get_job("j-first") is None
    assert store.get_job("j-second") is None  # never committed on top of the refused change
    assert store.get_job("j-third") is not None


async def test_requests_after_stop_are_refused() -> None:
    runtime = _runtime(RecordingStore())
    await runtime.start()
    await runtime.stop()

    with pytest.raises(ShuttingDownError):
        await runtime.apply(_submit("j-late"))  # type: ignore[arg-type]


def _version(job: Job, version: int, state: JobState = JobState.PENDING) -> Job:
    return replace(job, version=version, state=state)


async def test_a_slow_watcher_skips_to_the_newest_version() -> None:
    hub = WatchHub()
    base = Job(
        id="j-1",
        spec=spec(8),
        user="u",
        state=JobState.PENDING,
        submitted_at=ManualClock().now(),
        updated_at=ManualClock().now(),
        version=1,
    )
    watch = hub.subscribe("j-1")
    for version in range(2, 200):
        hub.publish(_version(base, version))
    hub.publish(_version(base, 200, JobState.CANCELLED))

    seen = [job.version async for job in watch.updates(base)]
    watch.close()

    assert seen[0] == 1
    assert seen == sorted(seen)
    assert seen[-1] == 200
    assert len(seen) < 100
    assert hub.watchers == 0


async def test_ending_watches_raises_shutting_down() -> None:
    hub = WatchHub()
    base = Job(
        id="j-1",
        spec=spec(8),
        user="u",
        state=JobState.PENDING,
        submitted_at=ManualClock().now(),
        updated_at=ManualClock().now(),
        version=1,
    )
    watch = hub.subscribe("j-1")
    hub.close_all()

    updates = watch.updates(base)
    assert (await anext(updates)).version == 1
    with pytest.raises(ShuttingDownError):
        await anext(updates)


async def test_a_cycle_cut_short_by_its_budget_is_followed_by_the_next_at_once() -> None:
    store = RecordingStore()
    index = small_topology().index
    config = SchedulerConfig(max_admitted_gpus_per_cycle=8)

    def build() -> Scheduler:
        stored = store.load()
        return Scheduler(index, config, jobs=stored.jobs, nodes=stored.nodes, queues=stored.queues)

    runtime = Runtime(build, store, ManualClock(), tick_interval_s=3600)
    await runtime.start()
    try:
        for name in index.host_names[:4]:
            await runtime.apply(
                lambda at, n=name: NodeRegistered(at=at, node=n, gpus=8, agent_version="t")
            )
        for i in range(4):
            await runtime.apply(_submit(f"j-{i}"))
        await runtime.apply(lambda at: TimerFired(at=at))  # one cycle; the ticker is far off
        deadline = asyncio.get_running_loop().time() + 10

        def states() -> dict[str, JobState]:
            return {f"j-{i}": runtime.get_job(f"j-{i}").state for i in range(4)}

        while set(states().values()) != {JobState.ADMITTED}:
            assert asyncio.get_running_loop().time() < deadline, states()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.next_tick(), 0.5)
        final = states()
    finally:
        await runtime.stop()

    admitted_per_commit = [
        sum(1 for job in changes.jobs if job.state is JobState.ADMITTED) for changes in store.saves
    ]
    assert set(final.values()) == {JobState.ADMITTED}  # no hour-long wait between cycles
    assert max(admitted_per_commit) == 1  # one job (8 GPUs) per cycle and per commit
