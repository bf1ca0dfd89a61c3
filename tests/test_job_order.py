"""Job listings from a kept order (:class:`scheduler.runtime.queries.JobOrder`): the same pages,
tokens and totals as sorting every job for every listing, while jobs come and go."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_builders import small_topology, spec

from scheduler.core.records import Job
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState
from scheduler.runtime import queries
from scheduler.runtime.queries import JobOrder, Page

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STATES = (JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED)
BASE = Job(
    id="j-0",
    spec=spec(8),
    user="ann",
    state=JobState.PENDING,
    submitted_at=T0,
    updated_at=T0,
)


def _reference(
    state: SchedulerState, *, states: tuple[JobState, ...], user: str, page_size: int, token: str
) -> Page[Job]:
    """The listing as it was computed before the kept order: sort every matching job."""
    size = min(page_size or queries.DEFAULT_JOB_PAGE, queries.MAX_JOB_PAGE)
    matching = sorted(
        (
            j
            for j in state.jobs.values()
            if (not states or j.state in states) and (not user or j.user == user)
        ),
        key=lambda j: (j.submitted_at, j.id),
    )
    start = 0
    if token:
        after = queries._job_key(token)
        start = next(
            (i for i, j in enumerate(matching) if (j.submitted_at, j.id) > after), len(matching)
        )
    items = tuple(matching[start : start + size])
    more = start + len(items) < len(matching)
    next_token = ""
    if more and items:
        last = items[-1]
        next_token = queries._encode(f"j|{last.submitted_at.isoformat()}|{last.id}")
    return Page(items, next_token, len(matching))


def _walk(
    state: SchedulerState,
    order: JobOrder,
    *,
    states: tuple[JobState, ...],
    user: str,
    page_size: int,
) -> list[Page[Job]]:
    pages: list[Page[Job]] = []
    token = ""
    while not pages or token:
        pages.append(
            queries.list_jobs(
                state,
                states=states,
                user=user,
                page_size=page_size,
                page_token=token,
                order=order,
            )
        )
        token = pages[-1].next_token
    return pages


def _reference_walk(
    state: SchedulerState, *, states: tuple[JobState, ...], user: str, page_size: int
) -> list[Page[Job]]:
    pages: list[Page[Job]] = []
    token = ""
    while not pages or token:
        pages.append(_reference(state, states=states, user=user, page_size=page_size, token=token))
        token = pages[-1].next_token
    return pages


job_changes = st.lists(
    st.one_of(
        # add a job: seconds after T0 (ties and out-of-order submissions), user, state
        st.tuples(
            st.just("add"),
            st.integers(0, 20),
            st.sampled_from(("ann", "bob")),
            st.sampled_from(STATES),
        ),
        st.tuples(st.just("drop"), st.integers(0, 1000), st.just(""), st.just(STATES[0])),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    changes=job_changes,
    page_size=st.sampled_from((1, 3, 7)),
    states=st.sampled_from(((), (JobState.PENDING,), (JobState.RUNNING, JobState.SUCCEEDED))),
    user=st.sampled_from(("", "bob")),
)
def test_a_kept_order_lists_what_sorting_every_job_lists(
    changes: list[tuple[str, int, str, JobState]],
    page_size: int,
    states: tuple[JobState, ...],
    user: str,
) -> None:
    state = SchedulerState(small_topology().index)
    order = JobOrder()
    for n, (kind, value, owner, job_state) in enumerate(changes):
        if kind == "add":
            job = replace(
                BASE,
                id=f"j-{n:03d}",
                user=owner,
                state=job_state,
                submitted_at=T0 + timedelta(seconds=value),
            )
            state.jobs[job.id] = job
        elif state.jobs:
            del state.jobs[sorted(state.jobs)[value % len(state.jobs)]]
        kept = _walk(state, order, states=states, user=user, page_size=page_size)
        expected = _reference_walk(state, states=states, user=user, page_size=page_size)
        assert kept == expected


def test_a_rebuilt_state_gets_a_new_order() -> None:
    order = JobOrder()
    first = SchedulerState(small_topology().index)
    first.jobs["j-a"] = replace(BASE, id="j-a")
    rebuilt = SchedulerState(small_topology().index)
    rebuilt.jobs["j-b"] = replace(BASE, id="j-b")

    assert [k[1] for k in order.keys(first)] == ["j-a"]
    assert [k[1] for k in order.keys(rebuilt)] == ["j-b"]


def test_a_foreign_page_token_is_still_refused() -> None:
    state = SchedulerState(small_topology().index)
    state.jobs["j-a"] = BASE

    with pytest.raises(queries.InvalidPageTokenError) as raised:
        queries.list_jobs(state, page_token=queries._encode("n|3"), order=JobOrder())
    assert raised.value.reason == "invalid_page_token"
