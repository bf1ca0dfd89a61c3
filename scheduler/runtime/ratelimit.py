"""Per agent session rate limits: one flooding connection must not slow everyone else.

Each ``Connect`` stream gets two token buckets (:class:`SessionLimiter`):

- every message the agent sends passes a **pace** bucket: past it, the stream's reader waits
  before reading on, so the excess stays in the transport (HTTP/2 flow control pushes back on
  the sender) and costs the scheduler nothing; nothing is lost, reports and acknowledgements
  only arrive later;
- heartbeats then pass a **heartbeat** bucket a few times the rate the scheduler asked for:
  past it they are **dropped** (counted): a later heartbeat carries the same news.

Time is passed in (seconds from any monotonic clock), so the buckets are pure and testable.

Must not import grpc, generated protos, ``scheduler.api`` or ``scheduler.store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Read when a session's limiter is made (not Final: the flood benchmark lifts them to measure
# what a flood cost without them).
PACE_PER_S = 500.0
"""Messages per second one agent session may send, sustained."""
PACE_BURST = 1_000.0
"""...and in one burst (a reconnect resends every unacknowledged report at once)."""
HEARTBEAT_FACTOR = 4.0
"""Heartbeats per expected heartbeat accepted before dropping."""
HEARTBEAT_BURST: Final = 10.0
# No tighter pace for reports: a stream is read in order, so a paced report would hold back the
# heartbeats behind it (a job checkpointing every fast step reports many times a second).


class TokenBucket:
    """``rate`` tokens per second up to ``burst``, starting full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def take(self, now: float) -> bool:
        """Take a token if one is there."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def reserve(self, now: float) -> float:
        """Take a token, going into debt if need be; seconds to wait before using it."""
        self._refill(now)
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@dataclass(slots=True)
class SessionCounts:
    """What one session's limiter did."""

    dropped_heartbeats: int = 0
    throttled: int = 0
    """Messages read late (the reader waited for them)."""


class SessionLimiter:
    """The two buckets of one agent session (see the module docstring)."""

    def __init__(self, heartbeat_interval_s: float, now: float) -> None:
        beats = max(HEARTBEAT_FACTOR / max(heartbeat_interval_s, 1e-3), 1.0)
        self._pace = TokenBucket(PACE_PER_S, PACE_BURST, now)
        self._beats = TokenBucket(beats, HEARTBEAT_BURST, now)
        self.counts = SessionCounts()

    def pace(self, now: float) -> float:
        """Seconds to wait before reading the next message (0: read on)."""
        wait = self._pace.reserve(now)
        if wait > 0:
            self.counts.throttled += 1
        return wait

    def heartbeat(self, now: float) -> bool:
        """Whether to apply this heartbeat (``False``: drop it; counted)."""
        if self._beats.take(now):
            return True
        self.counts.dropped_heartbeats += 1
        return False
