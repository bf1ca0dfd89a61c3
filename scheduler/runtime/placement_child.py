"""The placement worker's child process: ``python -m scheduler.runtime.placement_child``.

Reads framed pickles from stdin (:mod:`~scheduler.runtime.placement_worker`): first the
topology index, placer parameters and time budget, then pieces of work, answering each with
its proposals on stdout. Exits when stdin closes (the scheduler stopped or died). Anything
else that writes to stdout (a library's print) goes to stderr instead, so it cannot corrupt
the answers.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import BinaryIO

from placement import PlacementParams
from placement import place as run_placer
from scheduler.core.proposals import PlacementWork, propose
from scheduler.runtime.placement_worker import HEADER, encode
from topology.index import TopologyIndex


def _read(stream: BinaryIO) -> object | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    message: object = pickle.loads(data)
    return message


def main() -> None:
    """Serve pieces of work until stdin closes."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    setup = _read(requests)
    if not isinstance(setup, tuple):
        return
    index: TopologyIndex = setup[0]
    params: PlacementParams = setup[1]
    budget_s: float = setup[2]
    while (work := _read(requests)) is not None:
        if not isinstance(work, PlacementWork):
            raise SystemExit(f"placement worker: expected work, got {type(work).__name__}")
        answers.write(encode(propose(index, work, params, run_placer, budget_s)))
        answers.flush()


if __name__ == "__main__":
    main()
