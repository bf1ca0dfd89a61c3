"""Placement of parallel ranks on the topology: which GPU runs which rank of a job.

Pure functions; imports only ``topology``, numpy, OR-Tools, pydantic and networkx. The entry
point is :func:`place`; see :mod:`placement.engine` for the steps and ``shared/research/
placement.md`` for the derivation.
"""

from placement.bound import LowerBound
from placement.dims import DIMS, Dim
from placement.engine import place
from placement.errors import FailureReason, InvalidRequestError
from placement.fragmentation import Fragmentation
from placement.params import PlacementParams
from placement.request import OrderConvention, Parallelism, PlacementRequest
from placement.result import Placement, PlacementFailure, RankTable, SolverReport
from placement.snapshot import Snapshot
from placement.volumes import CpMode, DpMode, ModelShape

__all__ = [
    "DIMS",
    "CpMode",
    "Dim",
    "DpMode",
    "FailureReason",
    "Fragmentation",
    "InvalidRequestError",
    "LowerBound",
    "ModelShape",
    "OrderConvention",
    "Parallelism",
    "Placement",
    "PlacementFailure",
    "PlacementParams",
    "PlacementRequest",
    "RankTable",
    "Snapshot",
    "SolverReport",
    "place",
]
