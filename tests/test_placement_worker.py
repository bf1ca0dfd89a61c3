"""The placement worker process: same answers as placing in process, it survives its child
dying, and the child goes when the scheduler does. The server's use of it is covered by every
server test (it is on by default)."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
from server_builders import small_topology

from placement import Placement
from placement import place as run_placer
from scheduler.core.config import SchedulerConfig
from scheduler.core.proposals import PlacementWork, WorkItem, propose
from scheduler.jobspec import job_spec_from_data
from scheduler.runtime.placement_worker import PlacementWorker


def _work(index_gpus: int, sizes: tuple[int, ...]) -> PlacementWork:
    items = []
    for i, gpus in enumerate(sizes):
        spec = job_spec_from_data({"name": f"j{i}", "gpus": gpus, "command": ["x"]})
        items.append(
            WorkItem(f"j{i}", (spec.to_request().model_dump_json(), ()), spec.to_request())
        )
    busy = np.zeros(index_gpus, dtype=np.bool_)
    busy[:8] = True  # one host busy
    return PlacementWork(busy, frozenset({3}), tuple(items))


def _gpus(result: object, index: object) -> list[int]:
    assert isinstance(result, Placement)
    return sorted(int(g) for g in result.ranks.global_gpu_ids(index))  # type: ignore[arg-type]


async def test_the_worker_answers_what_placing_in_process_answers() -> None:
    topology = small_topology()
    index = topology.index
    params = SchedulerConfig().placement
    work = _work(index.num_gpus, (32, 8, 16))
    worker = PlacementWorker(index, params, budget_s=60.0)
    try:
        await worker.start()
        started = worker.pid
        assert started is not None
        remote = await worker.propose(work)
        assert worker.pid == started
    finally:
        await worker.close()
    local = propose(index, work, params, run_placer, budget_s=60.0)
    assert [p.job_id for p in remote] == [p.job_id for p in local] == ["j0", "j1", "j2"]
    assert [p.snapshot for p in remote] == [p.snapshot for p in local]
    assert [_gpus(p.result, index) for p in remote] == [_gpus(p.result, index) for p in local]
    assert worker.fallbacks == 0
    # Nothing on the busy host or the unavailable one.
    taken = {g for p in remote for g in _gpus(p.result, index)}
    assert not taken & set(range(8))
    assert not taken & set(range(int(index.gpu_offset[3]), int(index.gpu_offset[3]) + 8))


async def test_a_dead_child_is_replaced_and_its_work_done_anyway() -> None:
    index = small_topology().index
    params = SchedulerConfig().placement
    work = _work(index.num_gpus, (16,))
    worker = PlacementWorker(index, params, budget_s=60.0)
    try:
        assert len(await worker.propose(work)) == 1
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        again = await worker.propose(work)
        assert worker.fallbacks == 1
        assert isinstance(again[0].result, Placement)
        # The next piece of work goes to a new child.
        assert len(await worker.propose(work)) == 1
        assert worker.fallbacks == 1
        assert worker.pid not in (None, pid)
    finally:
        await worker.close()


async def test_the_child_exits_when_its_stdin_closes_and_keeps_stdout_for_answers() -> None:
    index = small_topology().index
    worker = PlacementWorker(index, SchedulerConfig().placement, budget_s=60.0)
    assert len(await worker.propose(_work(index.num_gpus, (8,)))) == 1
    child = worker._child
    assert child is not None
    assert child.stdin is not None
    child.stdin.close()  # what the scheduler's death does to it
    assert await asyncio.wait_for(child.wait(), timeout=30) == 0
    await worker.close()
