"""Errors of the Slurm hooks that are nobody's fault but firsthop's.

Standard library only; must not import ``scheduler``.
"""

from __future__ import annotations


class OutageError(Exception):
    """firsthop itself could not do its part (not the job's fault, not the node's); the hook
    applies the configured fail mode.

    Attributes:
        reason: stable machine-readable reason.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
