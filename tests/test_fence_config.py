"""The fence time the scheduler gives agents: shorter than the heartbeat timeout by at least
one heartbeat interval (a LOST host's ranks are fenced before they are replaced)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scheduler.config import ServerConfig


def test_fencing_is_off_unless_the_operator_sets_a_fence_time() -> None:
    assert ServerConfig(heartbeat_interval_s=5, heartbeat_timeout_s=30).fence_after() == 0
    assert ServerConfig(heartbeat_timeout_s=30, fence_after_s=15).fence_after() == 15


def test_a_fence_too_close_to_the_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="fence_after_s"):
        ServerConfig(heartbeat_interval_s=5, heartbeat_timeout_s=30, fence_after_s=28)
    assert ServerConfig(heartbeat_timeout_s=30, fence_after_s=25).fence_after() == 25
    assert ServerConfig(fence_after_s=0).fence_after() == 0  # fencing off
