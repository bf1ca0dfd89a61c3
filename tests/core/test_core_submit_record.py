"""The record a submission creates: version 1, persisted as the very record the state holds,
and bumped once by the next event that changes it."""

from __future__ import annotations

from core_builders import Harness, changes_of, cluster, spec

from scheduler.core.events import JobSubmitted
from scheduler.core.states import JobState


def test_a_submission_persists_version_one_of_the_state_record() -> None:
    h = Harness(cluster(1, 1, 1))
    actions = h.handle(
        JobSubmitted(h.clock.now(), job_id="j-1", spec=spec(8), user="u", submission_id="s-1")
    )
    (persisted,) = changes_of(actions).jobs
    assert persisted.version == 1
    assert persisted is h.state.jobs["j-1"]
    assert persisted.state is JobState.PENDING
    assert h.store.get_job("j-1") == persisted
    h.cancel("j-1")
    assert h.job("j-1").version == 2
    assert h.store.get_job("j-1") == h.job("j-1")
