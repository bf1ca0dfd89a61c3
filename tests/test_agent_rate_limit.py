"""Per agent session rate limits: the buckets, and one flooding agent connection against a
real server (submit p99 with and without the flood, same run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.agent_flood import measure
from scheduler.runtime.ratelimit import (
    HEARTBEAT_BURST,
    PACE_BURST,
    PACE_PER_S,
    SessionLimiter,
    TokenBucket,
)


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0, now=0.0)

    burst = [bucket.take(0.0) for _ in range(4)]
    later = [bucket.take(0.1), bucket.take(0.1)]
    refilled = [bucket.take(100.0) for _ in range(4)]

    assert burst == [True, True, True, False]
    assert later == [True, False]
    assert refilled == [True, True, True, False]


def test_reserve_says_how_long_to_wait_and_never_loses_a_message() -> None:
    bucket = TokenBucket(rate=100.0, burst=2.0, now=0.0)

    waits = [bucket.reserve(0.0) for _ in range(4)]

    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.01, 0.02])


def test_a_session_drops_excess_heartbeats_and_counts_them() -> None:
    limiter = SessionLimiter(heartbeat_interval_s=1.0, now=0.0)

    kept = sum(limiter.heartbeat(0.0) for _ in range(100))
    kept_later = sum(limiter.heartbeat(1.0) for _ in range(100))

    assert kept == HEARTBEAT_BURST
    assert kept_later == 4  # four times the asked rate, for one second
    assert limiter.counts.dropped_heartbeats == 200 - kept - kept_later


def test_a_session_is_paced_past_its_burst() -> None:
    limiter = SessionLimiter(heartbeat_interval_s=1.0, now=0.0)

    waits = [limiter.pace(0.0) for _ in range(int(PACE_BURST) + 10)]

    assert all(w == 0.0 for w in waits[: int(PACE_BURST)])
    assert waits[-1] == pytest.approx(10 / PACE_PER_S)
    assert limiter.counts.throttled == 10


@pytest.mark.slow
def test_one_flooding_agent_does_not_slow_other_clients_much(tmp_path: Path) -> None:
    result = measure(300, tmp_path)

    base = result["baseline"]["p99_ms"]
    assert result["heartbeats_dropped"] > 100
    # Noisy 2-core machines (the flooding child takes a core): the bound is generous, but a
    # flood read in full was far outside it where the issue measured it (14 -> 383 ms).
    assert result["heartbeat_flood"]["p99_ms"] <= max(3 * base, 50.0), result
    assert result["report_flood"]["p99_ms"] <= max(3 * base, 50.0), result
