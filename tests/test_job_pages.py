"""List answers from memoised job views (:mod:`scheduler.api.job_pages`): the memo, pages that
are what freshly built views gave (same jobs, sizes and tokens), and fairness (point reads
between chunks of a page, a bounded number of pages built at once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from server_builders import small_topology, spec

from firsthop.reasons import FailureReason
from firsthop.v1 import jobs_pb2
from scheduler.api.job_pages import JobPages, JobViews
from scheduler.api.serde import job_to_proto
from scheduler.core.records import Allocation, Failure, Job, RankSlot
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState
from scheduler.runtime import queries
from scheduler.runtime.queries import Page

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)


def _job(i: int = 0, **fields: object) -> Job:
    ranks = tuple(RankSlot(rank=r, host=f"h000{1 + r // 8}", gpu=r % 8) for r in range(16))
    base = Job(
        id=f"j-{i:04d}",
        spec=spec(16, 5, parallelism={"tp": 8, "dp": 2}, env={"RUN": "x" * (i % 37)}),
        user=("ann", "bob")[i % 2],
        state=JobState.RUNNING,
        submitted_at=T0 + timedelta(seconds=i // 3),  # ties: ordered by id
        updated_at=T0 + timedelta(seconds=5),
        submission_id=f"sub-{i}",
        reason="running",
        allocation=Allocation(ranks=ranks, cost=12.5, lower_bound=10.0, placed_at=T0),
        first_started_at=T0 + timedelta(seconds=1),
        started_at=T0 + timedelta(seconds=2),
        restarts=1,
        failures=(Failure(at=T0, reason=FailureReason.NODE_LOST, host="h0009", lost_s=42.5),),
        productive_s=17.0,
        started_hosts=frozenset({"h0001", "h0002"}),
        version=7,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


KINDS: dict[str, Callable[[int], Job]] = {
    "running": _job,
    "pending": lambda i: _job(
        i, state=JobState.PENDING, allocation=None, first_started_at=None, started_at=None
    ),
    "succeeded": lambda i: _job(
        i, state=JobState.SUCCEEDED, allocation=None, finished_at=T0 + timedelta(hours=1)
    ),
    "started_now": lambda i: _job(i, first_started_at=NOW),  # ettr of zero wall time
}


def _jobs(count: int) -> list[Job]:
    kinds = list(KINDS.values())
    return [kinds[i % len(kinds)](i) for i in range(count)]


def _fetch_of(jobs: Sequence[Job]) -> Callable[[int], asyncio.Future[Page[Job]]]:
    async def fetch(page_size: int) -> Page[Job]:
        return Page(tuple(jobs[:page_size]), "next", len(jobs))

    return fetch  # type: ignore[return-value]


# ---------------------------------------------------------------- the memo


def test_a_job_record_keeps_its_view_and_a_changed_job_gets_a_new_one() -> None:
    views = JobViews()
    job = _job()
    first = views.static(job)
    again = views.static(job)
    changed = replace(job, state=JobState.SUCCEEDED, finished_at=NOW, version=8)
    after_change = views.static(changed)

    assert again is first  # built once, reused
    assert jobs_pb2.Job.FromString(first).state == jobs_pb2.JOB_STATE_RUNNING
    assert jobs_pb2.Job.FromString(after_change).state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert views.static(changed) is after_change
    assert len(views) == 1  # one entry per job, the newest record's


def test_the_memo_leaves_out_what_is_computed_when_answering() -> None:
    view = jobs_pb2.Job.FromString(JobViews().static(_job()))

    assert not view.HasField("as_of")
    assert not view.HasField("ettr")
    full = job_to_proto(_job(), NOW)
    full.ClearField("as_of")
    full.ClearField("ettr")
    assert view == full


def test_the_memo_drops_its_oldest_views_beyond_its_capacity() -> None:
    views = JobViews(capacity=2)
    a, b, c = _job(1), _job(2), _job(3)
    a_view = views.static(a)
    b_view = views.static(b)
    views.static(c)

    assert len(views) == 2
    assert views.static(b) is b_view
    assert views.static(a) is not a_view  # dropped, then built again
    with pytest.raises(ValueError, match="capacity"):
        JobViews(capacity=0)


def test_views_of_records_no_longer_live_are_dropped_past_the_slack() -> None:
    views = JobViews(slack=2)
    jobs = [_job(i) for i in range(6)]
    for job in jobs:
        views.static(job)
    changed = replace(jobs[1], state=JobState.SUCCEEDED, version=8)
    live = {j.id: j for j in jobs[:3]} | {changed.id: changed}  # 3-5 left memory, 1 changed

    within_slack = JobViews(slack=10)
    within_slack.static(jobs[5])
    assert within_slack.trim({}) == 0  # one stale view is tolerated
    assert views.trim(live) == 4
    assert len(views) == 2
    assert views.static(jobs[0]) is views.static(jobs[0])


async def test_only_records_in_memory_are_memoised() -> None:
    jobs = _jobs(30)
    live = {j.id: j for j in jobs[:10]}
    pages = JobPages(live=lambda: live, chunk=7)

    response = await pages.answer(_fetch_of(jobs), 30, lambda: NOW, 1 << 20)

    assert list(response.jobs) == [job_to_proto(j, NOW) for j in jobs]
    assert len(pages.views) == 10  # the 20 read from the store were not kept


# ---------------------------------------------------------------- pages


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_page_holds_the_views_job_to_proto_builds(kind: str) -> None:
    jobs = [KINDS[kind](i) for i in range(7)]
    pages = JobPages(chunk=3)

    first = await pages.answer(_fetch_of(jobs), 7, lambda: NOW, 1 << 20)
    second = await pages.answer(_fetch_of(jobs), 7, lambda: NOW + timedelta(hours=1), 1 << 20)

    assert list(first.jobs) == [job_to_proto(j, NOW) for j in jobs]
    assert list(second.jobs) == [job_to_proto(j, NOW + timedelta(hours=1)) for j in jobs]
    assert first.next_page_token == "next"
    assert first.total_size == 7


async def _old_answer(
    state: SchedulerState, request: jobs_pb2.ListJobsRequest, max_bytes: int
) -> jobs_pb2.ListJobsResponse:
    """How the servicer answered before the memo: fresh views, cut by their ``ByteSize``."""

    def fetch(page_size: int) -> tuple[Page[Job], list[jobs_pb2.Job]]:
        page = queries.list_jobs(
            state, user=request.user, page_size=page_size, page_token=request.page_token
        )
        return page, [job_to_proto(j, NOW) for j in page.items]

    page, jobs = fetch(request.page_size)
    total, fits = 0, len(jobs)
    for i, job in enumerate(jobs):
        total += job.ByteSize()
        if total > max_bytes and i > 0:
            fits = i
            break
    if fits < len(jobs):
        page, jobs = fetch(fits)
    return jobs_pb2.ListJobsResponse(
        jobs=jobs, next_page_token=page.next_token, total_size=page.total
    )


@pytest.mark.parametrize(("page_size", "max_bytes"), [(0, 1 << 20), (40, 1 << 20), (1000, 9000)])
@pytest.mark.parametrize("user", ["", "bob"])
async def test_list_results_are_what_they_were_before_the_memo(
    page_size: int, max_bytes: int, user: str
) -> None:
    state = SchedulerState(small_topology().index)
    state.jobs.update((j.id, j) for j in _jobs(250))  # listings read the jobs alone
    pages = JobPages(chunk=16)

    async def new_answer(request: jobs_pb2.ListJobsRequest) -> jobs_pb2.ListJobsResponse:
        async def fetch(size: int) -> Page[Job]:
            return queries.list_jobs(
                state, user=request.user, page_size=size, page_token=request.page_token
            )

        return await pages.answer(fetch, request.page_size, lambda: NOW, max_bytes)

    async def old_answer(request: jobs_pb2.ListJobsRequest) -> jobs_pb2.ListJobsResponse:
        return await _old_answer(state, request, max_bytes)

    async def walk(
        answer: Callable[[jobs_pb2.ListJobsRequest], Awaitable[jobs_pb2.ListJobsResponse]],
    ) -> list[jobs_pb2.ListJobsResponse]:
        out: list[jobs_pb2.ListJobsResponse] = []
        token = ""
        while not out or token:
            request = jobs_pb2.ListJobsRequest(page_size=page_size, page_token=token, user=user)
            out.append(await answer(request))
            token = out[-1].next_page_token
        return out

    old_pages = await walk(old_answer)
    new_pages = await walk(new_answer)

    assert new_pages == old_pages
    assert len(new_pages) > 1
    assert sum(len(p.jobs) for p in new_pages) == (250 if not user else 125)
    if max_bytes < 1 << 20:  # cut by size: every page but the last is under the limit
        assert all(sum(j.ByteSize() for j in p.jobs) <= max_bytes for p in new_pages)
        assert all(len(p.jobs) < 1000 for p in new_pages)


# ---------------------------------------------------------------- fairness


async def test_a_point_read_during_a_page_is_answered_before_the_page() -> None:
    jobs = _jobs(500)
    by_id = {j.id: j for j in jobs}
    pages = JobPages(chunk=50)
    fetched = asyncio.Event()
    order: list[str] = []

    async def fetch(page_size: int) -> Page[Job]:
        fetched.set()
        return Page(tuple(jobs[:page_size]), "", len(jobs))

    async def listing() -> jobs_pb2.ListJobsResponse:
        response = await pages.answer(fetch, 500, lambda: NOW, 1 << 30)
        order.append("list")
        return response

    async def point_read() -> jobs_pb2.Job:
        await fetched.wait()  # the page is being built
        view = job_to_proto(by_id["j-0007"], NOW)
        order.append("get")
        return view

    listed, got = await asyncio.gather(listing(), point_read())

    assert order == ["get", "list"]
    assert len(listed.jobs) == 500
    assert got.id == "j-0007"


@pytest.mark.parametrize("builders", [1, 2])
async def test_list_pages_are_built_a_bounded_number_at_a_time(builders: int) -> None:
    jobs = _jobs(400)
    pages = JobPages(builders=builders, chunk=20)
    built_when_a_was_done: list[int] = []
    order: list[str] = []

    async def listing(name: str, mine: Sequence[Job]) -> None:
        await pages.answer(_fetch_of(mine), 200, lambda: NOW, 1 << 30)
        if name == "a":
            built_when_a_was_done.append(len(pages.views))
        order.append(name)

    await asyncio.gather(listing("a", jobs[:200]), listing("b", jobs[200:]))

    assert order == ["a", "b"]
    if builders == 1:
        assert built_when_a_was_done == [200]  # b had not begun: only a's views were built
    else:
        assert built_when_a_was_done[0] > 200  # both were built, a chunk of each in turn
