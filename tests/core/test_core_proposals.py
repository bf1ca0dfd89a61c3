"""Deferred placement: the cycle uses placements computed away from it only when they answer
the same request on the very same snapshot (scheduler.core.proposals)."""

from __future__ import annotations

from core_builders import Harness, cluster

from placement import Placement, PlacementFailure, Snapshot
from placement import place as run_placer
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import NodeDrainRequested, PlacementsProposed
from scheduler.core.proposals import (
    PlacementWork,
    Proposal,
    ProposalBook,
    Unplaceable,
    fingerprint,
    propose,
)
from scheduler.core.states import JobState

J = JobState


def deferred() -> Harness:
    h = Harness(cluster(2, 2, 4), SchedulerConfig(defer_placement=True))
    h.register()
    return h


def worked(h: Harness) -> PlacementWork:
    """The work the last cycle stopped for (it must have stopped for some)."""
    report = h.scheduler.last_cycle
    assert report is not None
    assert report.work is not None
    return report.work


def proposals_for(h: Harness, work: PlacementWork) -> tuple[Proposal, ...]:
    """What the placement worker would answer (computed here, in process)."""
    params = h.scheduler.config.placement
    return tuple(propose(h.topology.index, work, params, run_placer, budget_s=60.0))


def offer(h: Harness, proposals: tuple[Proposal, ...]) -> None:
    h.handle(PlacementsProposed(h.clock.advance(0.1), proposals))


def test_a_deferred_cycle_places_nothing_itself_and_asks_for_the_queue_in_order() -> None:
    h = deferred()
    first, second, third = h.submit(32), h.submit(8), h.submit(64)
    h.tick()
    assert h.states(first, second, third) == [J.PENDING] * 3
    report = h.scheduler.last_cycle
    assert report is not None
    assert report.placements == 0
    assert report.blocked[first] == "placing"
    work = worked(h)
    assert [item.job_id for item in work.jobs] == [first, second, third]
    assert not work.busy.any()


def test_proposals_admit_exactly_what_an_inline_cycle_admits() -> None:
    inline = Harness(cluster(2, 2, 4))
    inline.register()
    h = deferred()
    sizes = (32, 8, 64, 16, 8)
    for gpus in sizes:
        inline.submit(gpus)
        h.submit(gpus)
    inline.tick()
    h.tick()
    offer(h, proposals_for(h, worked(h)))
    report = h.scheduler.last_cycle
    assert report is not None
    assert report.proposals_used == len(sizes)
    assert report.placements == 0
    for job_id in inline.state.jobs:
        assert h.job(job_id).state is J.ADMITTED
        assert h.hosts_of(job_id) == inline.hosts_of(job_id)
    assert (h.state.busy == inline.state.busy).all()


def test_a_stale_proposal_is_never_used() -> None:
    h = deferred()
    job = h.submit(64)
    h.tick()
    proposals = proposals_for(h, worked(h))
    placement = proposals[0].result
    assert isinstance(placement, Placement)
    # Meanwhile a host the proposal uses is drained: the snapshot is no longer the same.
    host = h.topology.index.host_names[int(placement.ranks.hosts[0])]
    h.handle(NodeDrainRequested(h.clock.now(), host, "maintenance"))
    offer(h, proposals)
    assert h.job(job).state is J.PENDING
    report = h.scheduler.last_cycle
    assert report is not None
    assert report.proposals_used == 0
    # The cycle asked again, from the snapshot as it is now; those proposals are used.
    fresh = worked(h)
    assert [i.job_id for i in fresh.jobs] == [job]
    offer(h, proposals_for(h, fresh))
    assert h.job(job).state is J.ADMITTED
    assert host not in h.hosts_of(job)


def test_a_proposal_for_another_request_is_not_used() -> None:
    book = ProposalBook()
    h = deferred()
    h.submit(16)
    h.tick()
    work = worked(h)
    (proposal,) = proposals_for(h, work)
    book.offer([proposal])
    snapshot = Snapshot(h.topology.index, work.busy, work.unavailable)
    other_key = (proposal.key[0], ("h-not-there",))
    assert book.take(proposal.job_id, other_key, snapshot) is None
    assert book.take("another-job", proposal.key, snapshot) is None
    assert book.take(proposal.job_id, proposal.key, snapshot) is proposal.result
    assert book.take(proposal.job_id, proposal.key, snapshot) is None  # used once


def test_propose_places_each_job_on_what_the_ones_before_it_left() -> None:
    h = deferred()
    for _ in range(3):
        h.submit(64)  # two fill the 128-GPU cluster; the third cannot fit
    h.tick()
    proposals = proposals_for(h, worked(h))
    assert [type(p.result) for p in proposals] == [Placement, Placement, PlacementFailure]
    assert len({p.snapshot for p in proposals}) == 3
    first, second = (p.result for p in proposals[:2])
    assert isinstance(first, Placement)
    assert isinstance(second, Placement)
    index = h.topology.index
    assert not set(first.ranks.global_gpu_ids(index)) & set(second.ranks.global_gpu_ids(index))
    offer(h, proposals)
    report = h.scheduler.last_cycle
    assert report is not None
    # The third one: the counts rule it out without any placer, so it heads the queue.
    assert report.proposals_used == 2
    assert report.blocked[proposals[2].job_id] == "reserved"


def test_fingerprint_tells_snapshots_apart() -> None:
    index = cluster(1, 1, 2).index
    empty = Snapshot.empty(index)
    busy = empty.busy.copy()
    busy[3] = True
    assert fingerprint(empty) == fingerprint(Snapshot(index, empty.busy))
    assert fingerprint(empty) != fingerprint(Snapshot(index, busy))
    assert fingerprint(empty) != fingerprint(Snapshot(index, empty.busy, frozenset({1})))


def test_an_unplaceable_proposal_fails_the_job_like_the_placer_would() -> None:
    h = deferred()
    job = h.submit(8)
    h.tick()
    (proposal,) = proposals_for(h, worked(h))
    refused = Proposal(
        proposal.job_id, proposal.key, proposal.snapshot, Unplaceable("bad", "no way")
    )
    offer(h, (refused,))
    assert h.job(job).state is J.FAILED
    assert h.job(job).reason == "unplaceable_job"
