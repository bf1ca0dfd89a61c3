"""The storage contract, run against every implementation (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC

import pytest
from store_records import StoreKit, at, bumped, rich_job, rich_node, rich_queue

from scheduler.core.actions import ChangeSet
from scheduler.core.errors import DuplicateSubmissionError
from scheduler.core.states import JobState
from scheduler.store.protocol import Store, StoredState, VersionConflictError
from topology.errors import InvalidInputError

J = JobState


def test_a_new_store_is_empty(kit: StoreKit) -> None:
    store = kit.open()
    assert store.load() == StoredState((), (), ())
    assert store.get_job("nope") is None


def test_records_round_trip_exactly(kit: StoreKit) -> None:
    store = kit.open()
    jobs = (
        rich_job("a", state=J.RUNNING),
        rich_job("b", state=J.PREEMPTED, submitted=1, submission_id=None),
        rich_job("c", state=J.FAILED, submitted=2, submission_id="sub-3"),
    )
    node, queue = rich_node(), rich_queue()
    store.save(ChangeSet(jobs=jobs, nodes=(node,), queues=(queue,)))
    loaded = store.load()
    assert loaded.jobs == jobs
    assert loaded.nodes == (node,)
    assert loaded.queues == (queue,)
    assert store.get_job("b") == jobs[1]
    for job in loaded.jobs:
        assert job.submitted_at.tzinfo is not None
        assert job.submitted_at.utcoffset() == UTC.utcoffset(None)
    assert loaded.nodes[0].last_heartbeat_at == node.last_heartbeat_at


def test_newer_versions_replace_older_ones(kit: StoreKit) -> None:
    store = kit.open()
    job = rich_job()
    store.save(ChangeSet(jobs=(job,), nodes=(rich_node(),), queues=(rich_queue(),)))
    newer = bumped(
        job,
        state=J.SUCCEEDED,
        allocation=None,
        finished_at=at(500),
        started_hosts=frozenset(),
        exited_ranks=frozenset(),
    )
    node = replace(rich_node(), version=3, reason="resumed")
    queue = replace(rich_queue(), version=2, gpu_quota=None)
    store.save(ChangeSet(jobs=(newer,), nodes=(node,), queues=(queue,)))
    assert store.load() == StoredState((newer,), (node,), (queue,))


@pytest.mark.parametrize("version", [1, 2])
def test_stale_versions_are_refused_and_nothing_is_written(kit: StoreKit, version: int) -> None:
    store = kit.open()
    job = rich_job(version=2)
    store.save(ChangeSet(jobs=(job,), queues=(rich_queue(),)))
    before = store.load()
    fresh = rich_job("fresh", submission_id="other")
    stale = replace(job, version=version, reason="lost update")
    with pytest.raises(VersionConflictError) as info:
        store.save(ChangeSet(jobs=(fresh, stale), queues=(replace(rich_queue(), version=2),)))
    assert info.value.reason == "version_conflict"
    assert store.load() == before


def test_one_stale_record_of_any_kind_aborts_the_change_set(kit: StoreKit) -> None:
    store = kit.open()
    store.save(ChangeSet(nodes=(rich_node(version=5),)))
    with pytest.raises(VersionConflictError):
        store.save(ChangeSet(jobs=(rich_job(),), nodes=(rich_node(version=5),)))
    assert store.load().jobs == ()


def test_merged_change_sets_save_the_newest_version(kit: StoreKit) -> None:
    store = kit.open()
    first = ChangeSet(jobs=(rich_job(state=J.PENDING, submission_id=None),))
    later = ChangeSet(
        jobs=(bumped(first.jobs[0], state=J.CANCELLED, finished_at=at(3)),), queues=(rich_queue(),)
    )
    store.save(first.merged(later))
    (job,) = store.load().jobs
    assert job.state is J.CANCELLED
    assert job.version == 2


def test_empty_change_set_is_a_no_op(kit: StoreKit) -> None:
    store = kit.open()
    store.save(ChangeSet())
    assert store.load() == StoredState((), (), ())


def test_a_submission_id_belongs_to_one_job(kit: StoreKit) -> None:
    store = kit.open()
    store.save(ChangeSet(jobs=(rich_job("a", submission_id="k"),)))
    with pytest.raises(DuplicateSubmissionError):
        store.save(ChangeSet(jobs=(rich_job("b", submission_id="k"),)))
    store.save(ChangeSet(jobs=(rich_job("c", submission_id="k", user="bob"),)))
    assert [j.id for j in store.load().jobs] == ["a", "c"]


def _fill(store: Store) -> None:
    jobs = []
    for i in range(12):
        state = [J.PENDING, J.RUNNING, J.SUCCEEDED][i % 3]
        jobs.append(
            rich_job(
                f"j{i:02d}",
                state=state,
                submitted=100 - i // 2,  # pairs share a time
                user="alice" if i % 2 else "bob",
                queue="a" if i < 6 else "b",
                submission_id=None,
            )
        )
    store.save(ChangeSet(jobs=tuple(jobs)))


def test_listing_is_in_submission_order_then_id(kit: StoreKit) -> None:
    store = kit.open()
    _fill(store)
    page = store.list_jobs(limit=100)
    assert page.next_page_token is None
    keys = [(j.submitted_at, j.id) for j in page.jobs]
    assert keys == sorted(keys)
    assert len(keys) == 12


def test_listing_filters(kit: StoreKit) -> None:
    store = kit.open()
    _fill(store)
    running = store.list_jobs(states=[J.RUNNING])
    assert {j.id for j in running.jobs} == {"j01", "j04", "j07", "j10"}
    live = store.list_jobs(states=[J.RUNNING, J.PENDING], queue="b", user="alice")
    assert {j.id for j in live.jobs} == {"j07", "j09"}
    assert store.list_jobs(user="carol").jobs == ()


def test_listing_pages_cover_everything_once(kit: StoreKit) -> None:
    store = kit.open()
    _fill(store)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = store.list_jobs(limit=5, page_token=token, states=[J.PENDING, J.SUCCEEDED])
        seen += [j.id for j in page.jobs]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert pages == 2
    everything = store.list_jobs(states=[J.PENDING, J.SUCCEEDED], limit=100).jobs
    assert seen == [j.id for j in everything]
    assert len(seen) == 8


@pytest.mark.parametrize(
    ("token", "limit", "reason"),
    [
        ("not-a-token!", 10, "invalid_page_token"),
        ("Zm9vYmFy", 10, "invalid_page_token"),
        (None, 0, "invalid_page_size"),
        (None, 100_000, "invalid_page_size"),
    ],
)
def test_bad_listing_arguments(kit: StoreKit, token: str | None, limit: int, reason: str) -> None:
    store = kit.open()
    with pytest.raises(InvalidInputError) as info:
        store.list_jobs(page_token=token, limit=limit)
    assert info.value.reason == reason


def test_what_was_saved_survives_reopening(durable_kit: StoreKit) -> None:
    kit = durable_kit
    store = kit.open()
    job, node, queue = rich_job(), rich_node(), rich_queue()
    store.save(ChangeSet(jobs=(job,), nodes=(node,), queues=(queue,)))
    store.close()
    again = kit.open()
    assert again.load() == StoredState((job,), (node,), (queue,))
    # Reopening runs the migrations again: a no-op on an up-to-date schema.
    again.save(ChangeSet(jobs=(bumped(job, reason="after reopen"),)))
    assert kit.open().get_job(job.id).reason == "after reopen"  # type: ignore[union-attr]


def test_history_stays_out_of_a_load_but_answers_lookups(kit: StoreKit) -> None:
    store = kit.open()
    old = replace(rich_job("old", state=J.SUCCEEDED, submission_id="s-old"), finished_at=at(10))
    recent = replace(rich_job("new", state=J.FAILED, submitted=1, submission_id="s-new"))
    live = rich_job("live", state=J.PENDING, submitted=2, submission_id=None)
    store.save(ChangeSet(jobs=(old, recent, live)))

    loaded = store.load(finished_after=at(50))
    everything = store.load()

    assert [j.id for j in loaded.jobs] == ["new", "live"]  # recent finished at 99, live never
    assert [j.id for j in everything.jobs] == ["old", "new", "live"]
    assert store.job_for_submission("alice", "s-old") == old
    assert store.job_for_submission("alice", "s-none") is None
    assert store.job_for_submission("bob", "s-old") is None
    assert store.count_jobs() == 3
    assert store.count_jobs(states=[J.SUCCEEDED, J.FAILED]) == 2
    assert store.count_jobs(user="bob") == 0
    assert store.has_finished_before(at(50))  # "old" finished at 10
    assert not store.has_finished_before(at(5))
