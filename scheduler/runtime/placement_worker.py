"""A worker process that computes placements for the scheduling cycle, off the event loop.

The cycle runs on the server's event loop; one CP-SAT placement of a large job on thousands of
hosts takes tens of milliseconds, and filling a cluster takes hundreds of them, during which
no request would be answered. With ``SchedulerConfig.defer_placement`` the cycle leaves the
placements it needs as :class:`~scheduler.core.proposals.PlacementWork`; this module runs
:func:`~scheduler.core.proposals.propose` on them in one child process and hands the
proposals back (the runtime queues them as a ``PlacementsProposed`` event, and the next cycle
uses those still valid).

The child is forked from a ``forkserver`` that imported the placer once, so it starts without
the server's threads and in well under a second; it gets the topology index once, at start.
If the child dies, the work is done in this process instead (blocking, but never stuck) and
a new child is started for the next one.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from placement import PlacementParams
from placement import place as run_placer
from scheduler.core.proposals import PlacementWork, Proposal, propose
from topology.index import TopologyIndex

_log = logging.getLogger(__name__)

_PRELOAD = ["placement", "scheduler.core.proposals"]

_CHILD: list[tuple[TopologyIndex, PlacementParams, float]] = []
"""What the child process was started with (set once by :func:`_start_child`)."""


def _start_child(index: TopologyIndex, params: PlacementParams, budget_s: float) -> None:
    _CHILD[:] = [(index, params, budget_s)]


def _propose_in_child(work: PlacementWork) -> list[Proposal]:
    index, params, budget_s = _CHILD[0]
    return propose(index, work, params, run_placer, budget_s)


class PlacementWorker:
    """Computes placement proposals in one child process, one piece of work at a time.

    Args:
        index: the topology index (sent to the child once).
        params: placer parameters.
        budget_s: wall time one piece of work may take (the first job is always placed).
    """

    def __init__(self, index: TopologyIndex, params: PlacementParams, budget_s: float) -> None:
        self._index = index
        self._params = params
        self._budget_s = budget_s
        self._pool: ProcessPoolExecutor | None = None
        self.runs = 0
        """Pieces of work done (in the child or, after a failure, in this process)."""
        self.fallbacks = 0
        """Pieces of work done in this process because the child failed."""

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=_start_child,
                initargs=(self._index, self._params, self._budget_s),
            )
        return self._pool

    async def propose(self, work: PlacementWork) -> list[Proposal]:
        """Proposals for ``work`` (computed in the child; in this process if it failed)."""
        loop = asyncio.get_running_loop()
        self.runs += 1
        try:
            return await loop.run_in_executor(self._executor(), _propose_in_child, work)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            _log.error("placement worker failed (%s); placing in the scheduler process", exc)
            self.close()
            self.fallbacks += 1
            return propose(self._index, work, self._params, run_placer, self._budget_s)

    def close(self) -> None:
        """Stop the child (a later :meth:`propose` starts a new one)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
