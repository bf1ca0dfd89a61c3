"""The clock seam: where the runtime gets the time it stamps on events.

The core never reads a clock itself: every event carries its ``at``. The runtime owns a real
clock (wall time in UTC) that satisfies :class:`Clock`; tests and the simulator use
:class:`ManualClock`, which moves only when told to.

Must not import anything outside the standard library.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Default start of a :class:`ManualClock` (any aware UTC instant would do)."""


@runtime_checkable
class Clock(Protocol):
    """A source of timezone-aware UTC instants."""

    def now(self) -> datetime:
        """The current instant (aware, UTC)."""
        ...


class ManualClock:
    """A clock that moves only when :meth:`advance` or :meth:`set` is called."""

    def __init__(self, start: datetime = EPOCH) -> None:
        _check_aware(start)
        self._now = start

    def now(self) -> datetime:
        """The current instant."""
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (not negative) and return the new instant."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, instant: datetime) -> None:
        """Jump to ``instant`` (not earlier than now)."""
        _check_aware(instant)
        if instant < self._now:
            raise ValueError(f"a clock cannot go back ({instant} < {self._now})")
        self._now = instant


def _check_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} is not timezone-aware")
