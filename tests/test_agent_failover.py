"""Agents over several scheduler addresses: which one a failure moves them to.

:class:`agents.transport.FailoverAgentTransport` opens channels lazily, so its choice of
address is exercised here without a network; the real move (SIGKILL of a leader) is in
``tests/test_ha_processes.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.transport import (
    FailoverAgentTransport,
    SchedulerRejectedError,
    TransportError,
    parse_addresses,
)
from topology.errors import FirsthopError


def _never(address: str) -> Any:
    raise AssertionError(f"no channel expected ({address})")


def test_server_lists_are_split_on_commas_and_deduplicated() -> None:
    assert parse_addresses(" a:1, b:2,,a:1 ") == ["a:1", "b:2"]
    with pytest.raises(FirsthopError, match="no scheduler address") as caught:
        parse_addresses(" , ")
    assert caught.value.reason == "invalid_server_address"


def test_an_unreachable_scheduler_moves_to_the_next_address_and_wraps_around() -> None:
    transport = FailoverAgentTransport(["a:1", "b:2", "c:3"], _never)

    transport.failed("a:1", TransportError("refused"))
    second = transport.current
    transport.failed("b:2", TransportError("refused"))
    transport.failed("c:3", TransportError("refused"))

    assert second == "b:2"
    assert transport.current == "a:1"
    assert transport.moves == 3


def test_a_standby_hint_goes_straight_to_the_leader() -> None:
    transport = FailoverAgentTransport(["a:1", "b:2", "c:3"], _never)

    transport.failed("a:1", SchedulerRejectedError("standby", reason="not_leader", leader="c:3"))
    at_hint = transport.current
    transport.failed("c:3", SchedulerRejectedError("standby", reason="not_leader", leader="d:4"))

    assert at_hint == "c:3"
    assert transport.current == "d:4"
    assert transport.addresses == ["a:1", "b:2", "c:3", "d:4"]


def test_other_refusals_and_stale_failures_do_not_move() -> None:
    transport = FailoverAgentTransport(["a:1", "b:2"], _never)

    transport.failed("a:1", SchedulerRejectedError("again", reason="unknown_session"))
    transport.failed("b:2", TransportError("an older failure of another address"))

    assert transport.current == "a:1"
    assert transport.moves == 0
