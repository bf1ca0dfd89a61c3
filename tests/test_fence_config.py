"""The fence time the scheduler gives agents.

At most the heartbeat timeout less one interval (a LOST host's ranks are fenced before they
are replaced); by default exactly that when it rides out a scheduler outage of
``outage_tolerance_s`` (plus one interval and the agents' longest reconnection delay), else
off with a warning, so that the README's short recovery settings (1 s / 5 s) never fence a job
across a restart (``tests/test_e2e_restart.py``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.session import RECONNECT_SHARE_OF_TIMEOUT
from agents.transport import SILENCE_INTERVALS
from scheduler.config import AGENT_RECONNECT_SHARE, AGENT_SILENCE_INTERVALS, ServerConfig


def test_the_default_is_the_longest_allowed_fence_with_the_default_heartbeats() -> None:
    config = ServerConfig()
    assert (config.heartbeat_interval_s, config.heartbeat_timeout_s) == (5, 30)
    assert config.fence_after() == 25
    # It rides out the tolerated outage: 10 s + one interval + a fifth of the timeout.
    assert config.fence_needed_s() == 21
    assert config.fence_warning() is None


def test_short_heartbeat_timeouts_turn_fencing_off_with_a_warning() -> None:
    readme = ServerConfig(heartbeat_interval_s=1, heartbeat_timeout_s=5)
    assert readme.fence_after() == 0  # 4 s would not survive a 3.4 s cold restart
    warning = readme.fence_warning()
    assert warning is not None
    assert warning.startswith("fencing is off")
    assert "heartbeat_timeout_s of 15 s" in warning  # (2 * 1 + 10) / 0.8
    assert ServerConfig(heartbeat_interval_s=1, heartbeat_timeout_s=15).fence_after() == 14


def test_the_tolerated_outage_is_the_operators_choice() -> None:
    tight = ServerConfig(heartbeat_interval_s=1, heartbeat_timeout_s=5, outage_tolerance_s=1.5)
    assert tight.fence_after() == 4
    assert tight.fence_warning() is None
    wide = ServerConfig(outage_tolerance_s=20)
    assert wide.fence_after() == 0
    assert wide.fence_warning() is not None


def test_an_explicit_fence_time_is_kept_and_warned_about_when_short() -> None:
    assert ServerConfig(fence_after_s=15).fence_after() == 15
    short = ServerConfig(heartbeat_interval_s=1, heartbeat_timeout_s=3, fence_after_s=2)
    assert short.fence_after() == 2
    warning = short.fence_warning()
    assert warning is not None
    assert "is shorter than 11.6 s" in warning  # 10 + 1 + 0.2 * 3
    off = ServerConfig(fence_after_s=0)
    assert off.fence_after() == 0
    assert "fence_after_s is 0" in (off.fence_warning() or "")


def test_a_fence_too_close_to_the_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="fence_after_s"):
        ServerConfig(heartbeat_interval_s=5, heartbeat_timeout_s=30, fence_after_s=28)
    assert ServerConfig(heartbeat_timeout_s=30, fence_after_s=25).fence_after() == 25


def test_long_intervals_wait_for_a_silent_leaders_stream_to_time_out() -> None:
    slow = ServerConfig(heartbeat_interval_s=8, heartbeat_timeout_s=60)
    assert slow.fence_needed_s() == 3 * 8 + 12  # not 10 + 8 + 12
    assert slow.fence_after() == 52


def test_the_agents_timings_match() -> None:
    assert AGENT_RECONNECT_SHARE == RECONNECT_SHARE_OF_TIMEOUT
    assert AGENT_SILENCE_INTERVALS == SILENCE_INTERVALS
