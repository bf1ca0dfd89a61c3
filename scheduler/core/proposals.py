"""Placements computed away from the scheduling cycle, checked before they are used.

With ``SchedulerConfig.defer_placement`` the cycle never runs the placer for an admission
itself (at 4,096 hosts one placement of a 512-GPU job takes 60-100 ms, and the cycle runs on
the server's event loop). Instead:

1. the cycle walks the queue as always; at the first job whose placement it does not know it
   stops (the job is blocked ``placing``) and leaves :class:`PlacementWork` in its report:
   the snapshot it would have placed against and the jobs that come next in cycle order;
2. the runtime hands the work to a worker process, which runs :func:`propose`: it places the
   jobs one after the other, each on the snapshot left by the ones before it (as the cycle
   would if it admitted them all), within a time budget;
3. the proposals come back as an event; the next cycle walks the queue again and, where it
   would call the placer, uses a proposal instead **only if** it answers the same request
   (same shape, same excluded hosts) on the very same snapshot: same busy GPUs, same
   unavailable hosts (:func:`fingerprint`). That is the optimistic check. Whatever changed
   meanwhile (a job ended, a node was lost, the cycle took a backfill path) shows up as a
   different fingerprint, and the cycle asks for new work from that point instead.

So a proposal used is exactly what the placer would have answered in the cycle, and a stale
one is never used. A refusal is used the same way (its snapshot is the cycle's own).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from placement import Placement, PlacementFailure, PlacementParams, PlacementRequest, Snapshot
from topology.errors import InvalidInputError
from topology.index import BoolArray, TopologyIndex

RequestKey = tuple[str, tuple[str, ...]]
"""Equal for jobs whose placement requests are equal (``PlacementCache.key``)."""

Placer = Callable[[Snapshot, PlacementRequest, PlacementParams], Placement | PlacementFailure]


def fingerprint(snapshot: Snapshot) -> bytes:
    """A digest of what a placement depends on besides the request: busy GPUs, unavailable
    hosts (the topology is fixed for a scheduler's life)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.packbits(snapshot.busy).tobytes())
    digest.update(np.array(sorted(snapshot.unavailable), dtype=np.int64).tobytes())
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Unplaceable:
    """The placer refused the request itself as invalid (``InvalidInputError``)."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Proposal:
    """The placer's answer for one job's request on one snapshot.

    Attributes:
        job_id: the job.
        key: the request it answers (:data:`RequestKey`).
        snapshot: :func:`fingerprint` of the snapshot it was computed on.
        result: a placement, the placer's refusal, or an invalid request.
    """

    job_id: str
    key: RequestKey
    snapshot: bytes
    result: Placement | PlacementFailure | Unplaceable


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One job to place: its id, request key and request."""

    job_id: str
    key: RequestKey
    request: PlacementRequest


@dataclass(frozen=True, slots=True)
class PlacementWork:
    """What a cycle that stopped at an unknown placement asks to be computed.

    Attributes:
        busy: the busy GPU mask of the snapshot the cycle stopped at.
        unavailable: its unavailable host ids.
        jobs: the job it stopped at, then the ones after it in cycle order.
    """

    busy: BoolArray
    unavailable: frozenset[int]
    jobs: tuple[WorkItem, ...]


def propose(
    index: TopologyIndex,
    work: PlacementWork,
    params: PlacementParams,
    placer: Placer,
    budget_s: float,
) -> list[Proposal]:
    """Place ``work.jobs`` in order, each on the snapshot the ones before it left.

    A placed job takes its GPUs; a refused one takes nothing (as in the cycle). Stops once
    ``budget_s`` of wall time is spent (the first job is always placed).
    """
    busy = np.array(work.busy, dtype=np.bool_, copy=True)
    proposals: list[Proposal] = []
    started = time.perf_counter()
    for item in work.jobs:
        if proposals and time.perf_counter() - started >= budget_s:
            break
        snapshot = Snapshot(index, busy, work.unavailable)
        result: Placement | PlacementFailure | Unplaceable
        try:
            result = placer(snapshot, item.request, params)
        except InvalidInputError as exc:
            result = Unplaceable(str(exc.reason), exc.message)
        proposals.append(Proposal(item.job_id, item.key, fingerprint(snapshot), result))
        if isinstance(result, Placement):
            busy[result.ranks.global_gpu_ids(index)] = True
    return proposals


class ProposalBook:
    """Proposals waiting to be used by a cycle, at most one per job."""

    def __init__(self) -> None:
        self._by_job: dict[str, Proposal] = {}

    def offer(self, proposals: Iterable[Proposal]) -> None:
        """Replace what is held by a new set (older proposals are stale by now)."""
        self._by_job = {p.job_id: p for p in proposals}

    def take(
        self, job_id: str, key: RequestKey, snapshot: Snapshot
    ) -> Placement | PlacementFailure | Unplaceable | None:
        """The proposal for ``job_id`` if it answers ``key`` on exactly ``snapshot``."""
        proposal = self._by_job.get(job_id)
        if proposal is None or proposal.key != key:
            return None
        if proposal.snapshot != fingerprint(snapshot):
            return None
        del self._by_job[job_id]
        return proposal.result

    def __len__(self) -> int:
        return len(self._by_job)
