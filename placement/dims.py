"""The parallel dimensions a job's ranks are laid out along.

Must not import anything outside the standard library.
"""

from __future__ import annotations

from typing import Literal

Dim = Literal["tp", "cp", "ep", "dp", "pp"]
"""A parallel dimension: tensor, context, expert, data or pipeline parallelism."""

DIMS: tuple[Dim, ...] = ("tp", "cp", "ep", "dp", "pp")
"""Every dimension, in Megatron's default order (innermost first)."""
