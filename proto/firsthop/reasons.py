"""The catalogue of stable reasons: the machine-readable words the scheduler, its agents and
its clients exchange, one :class:`~enum.StrEnum` per vocabulary.

Each member's value is the string that travels (in a ``reason`` field, in the
``firsthop-reason`` trailing metadata, in the store) and that users and scripts switch on: the
values are a contract, documented in ``proto/firsthop/v1/*.proto`` and the README. Add members
freely; never change a value.

Both sides import this module: the scheduler (core, API, store, CLIs) and the agents, which
import nothing else of the scheduler's. It sits in the wire-contract package beside the
generated code, and like it imports nothing of ours.

Must not import ``topology``, ``placement``, ``scheduler``, ``agents`` or the generated protos.
"""

from __future__ import annotations

from enum import StrEnum


class RankExitReason(StrEnum):
    """How one rank's process ended, as its agent reports it (``RankExited``)."""

    COMPLETED = "completed"
    """Exited with status 0."""
    FAILED = "failed"
    """Exited with another status, or was killed by a signal it was not sent."""
    STOPPED = "stopped"
    """Ended after a ``StopRanks`` command (SIGTERM, then SIGKILL after the grace period)."""
    START_FAILED = "start_failed"
    """Its process could not be started (no such program, not executable...)."""
    LOST = "lost"
    """The agent lost track of it (for example after the agent restarted)."""
