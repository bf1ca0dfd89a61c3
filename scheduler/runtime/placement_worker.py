"""A worker process that computes placements for the scheduling cycle, off the event loop.

The cycle runs on the server's event loop; one CP-SAT placement of a large job on thousands of
hosts takes tens of milliseconds, and filling a cluster takes hundreds of them, during which
no request would be answered. With ``SchedulerConfig.defer_placement`` the cycle leaves the
placements it needs as :class:`~scheduler.core.proposals.PlacementWork`; this module has
:func:`~scheduler.core.proposals.propose` run on them in a child process and hands the
proposals back (the runtime queues them as a ``PlacementsProposed`` event, and the next cycle
uses those still valid).

The child is ``python -m scheduler.runtime.placement_child``, started with the runtime, talking
over its stdin and stdout: length-prefixed pickles (the topology index once, then one piece of
work and its proposals at a time). A plain child rather than :mod:`multiprocessing`: it holds
none of the scheduler's other descriptors (a forkserver inherits the scheduler's stdout, so
whoever reads that never sees it close), and it exits by itself when the scheduler goes (its
stdin closes). If the child dies or answers nonsense, that piece of work is done in this
process instead (blocking, but never stuck) and a new child is started for the next one.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import struct
import sys

from placement import PlacementParams
from placement import place as run_placer
from scheduler.core.proposals import PlacementWork, Proposal, propose
from topology.index import TopologyIndex

_log = logging.getLogger(__name__)

HEADER = struct.Struct("!Q")
"""Each message: its length (8 bytes, big-endian), then a pickle of that many bytes."""


def encode(message: object) -> bytes:
    """One framed message."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


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
        self._child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.runs = 0
        """Pieces of work done (in the child or, after a failure, in this process)."""
        self.fallbacks = 0
        """Pieces of work done in this process because the child failed."""

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before the first piece of work)."""
        return None if self._child is None else self._child.pid

    async def start(self) -> None:
        """Start the child now rather than on the first piece of work (it takes a second or
        two to import the placer); a failure here is retried on first use."""
        async with self._lock:
            try:
                await self._started()
            except OSError as exc:
                _log.warning("placement worker did not start (%r); retrying on first use", exc)

    async def _started(self) -> asyncio.subprocess.Process:
        child = self._child
        if child is not None and child.returncode is None:
            return child
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scheduler.runtime.placement_child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._child = child
        await self._send(child, (self._index, self._params, self._budget_s))
        return child

    @staticmethod
    async def _send(child: asyncio.subprocess.Process, message: object) -> None:
        if child.stdin is None:  # pragma: no cover - always piped
            raise OSError("placement worker has no stdin")
        child.stdin.write(encode(message))
        await child.stdin.drain()

    @staticmethod
    async def _receive(child: asyncio.subprocess.Process) -> list[Proposal]:
        if child.stdout is None:  # pragma: no cover - always piped
            raise OSError("placement worker has no stdout")
        (size,) = HEADER.unpack(await child.stdout.readexactly(HEADER.size))
        answer = pickle.loads(await child.stdout.readexactly(size))
        if not isinstance(answer, list) or not all(isinstance(p, Proposal) for p in answer):
            raise ValueError(f"placement worker answered a {type(answer).__name__}")
        return answer

    async def propose(self, work: PlacementWork) -> list[Proposal]:
        """Proposals for ``work`` (computed in the child; in this process if it failed)."""
        async with self._lock:
            self.runs += 1
            try:
                child = await self._started()
                await self._send(child, work)
                return await self._receive(child)
            except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
                _log.error("placement worker failed (%r); placing in the scheduler process", exc)
                await self.close()
                self.fallbacks += 1
                return propose(self._index, work, self._params, run_placer, self._budget_s)

    async def close(self) -> None:
        """Stop the child and wait for it (a later :meth:`propose` starts a new one)."""
        child, self._child = self._child, None
        if child is None:
            return
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await child.wait()
