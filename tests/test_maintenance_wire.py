"""Maintenance steps across the agent wire (pair tests), and the agent running them for real."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

import pytest
from test_agent_session import FakeTransport, HeldExecutor, _session

from agents import wire
from agents.health.verdict import Health
from agents.maintenance import run_action, run_step
from firsthop.v1 import agent_pb2
from scheduler.api import agent_serde
from scheduler.core.actions import RunMaintenance
from scheduler.core.events import MaintenanceReported
from topology.errors import InvalidInputError

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)
ACTION = RunMaintenance(
    "maint:drv:h0002:3:action", "drv", "h0002", 3, "action", ("/bin/up", "--x y"), 90.5, "deep"
)


def _down(item: RunMaintenance) -> object:
    data = agent_serde.outgoing_to_proto(item).SerializeToString()
    return wire.scheduler_message_from_proto(agent_pb2.SchedulerMessage.FromString(data))


def test_the_agent_reads_every_field_of_a_maintenance_command() -> None:
    assert _down(ACTION) == wire.MaintenanceCommand(
        "maint:drv:h0002:3:action", "drv", 3, "action", ("/bin/up", "--x y"), 90.5, "deep"
    )


@pytest.mark.parametrize("exit_code", [None, 0, 3])
def test_a_maintenance_result_reads_as_the_event_the_agent_meant(exit_code: int | None) -> None:
    command = _down(ACTION)
    assert isinstance(command, wire.MaintenanceCommand)
    outcome = wire.MaintenanceOutcome(exit_code == 0, "exit 3", "log é\n", exit_code)
    report = wire.maintenance_report(command, outcome, T0)
    data = agent_pb2.Report.FromString(report.SerializeToString())
    assert data.maintenance.HasField("exit_code") == (exit_code is not None)
    event = agent_serde.maintenance_from_proto(data.maintenance, "h0002")(T1)
    assert event == MaintenanceReported(
        T1, "drv", "h0002", 3, "action", exit_code == 0, "exit 3", "log é\n"
    )


def test_a_maintenance_result_of_an_unknown_step_is_refused() -> None:
    bad = agent_pb2.MaintenanceResult(campaign="drv", step="reboot", ok=True)
    with pytest.raises(InvalidInputError) as err:
        agent_serde.maintenance_from_proto(bad, "h1")
    assert err.value.reason == "invalid_report"


# ---------------------------------------------------------------- running steps


async def test_an_action_runs_its_argv_with_host_and_campaign_in_env() -> None:
    script = (
        "import os, sys; "
        "print(os.environ['FIRSTHOP_HOST'], os.environ['FIRSTHOP_CAMPAIGN'], sys.argv[1])"
    )
    command = wire.MaintenanceCommand(
        "c1", "drv", 1, "action", (sys.executable, "-c", script, "a b;echo no-shell"), 30, "fast"
    )
    outcome = await run_step(command, "h0007", probe=lambda: (Health.HEALTHY, ""), deep=None)
    assert outcome == wire.MaintenanceOutcome(True, "", "h0007 drv a b;echo no-shell\n", 0)


async def test_a_failing_action_reports_its_status_and_output() -> None:
    argv = (sys.executable, "-c", "import sys; print('bad driver'); sys.exit(3)")
    outcome = await run_action(argv, timeout_s=30, env={})
    assert (outcome.ok, outcome.detail, outcome.output, outcome.exit_code) == (
        False,
        "exit 3",
        "bad driver\n",
        3,
    )


async def test_an_action_past_its_timeout_is_killed() -> None:
    argv = (sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)")
    started = time.monotonic()
    outcome = await run_action(argv, timeout_s=0.5, env={})
    assert time.monotonic() - started < 10
    assert not outcome.ok
    assert outcome.detail == "timeout after 0.5 s"
    assert outcome.output == "started\n"


async def test_a_missing_program_fails_the_step() -> None:
    outcome = await run_action(("/nonexistent/upgrade",), timeout_s=5, env={})
    assert not outcome.ok
    assert outcome.detail.startswith("cannot run '/nonexistent/upgrade'")


async def test_checks_fast_and_deep() -> None:
    fast = wire.MaintenanceCommand("c2", "drv", 1, "check", (), 30, "fast")
    deep = wire.MaintenanceCommand("c3", "drv", 1, "check", (), 30, "deep")

    async def failing_deep() -> wire.HealthCheckOutcome:
        return wire.HealthCheckOutcome(False, "gpu 1: matmul slow")

    sick = await run_step(fast, "h", probe=lambda: (Health.SUSPECT, "ecc"), deep=None)
    assert sick == wire.MaintenanceOutcome(False, "suspect: ecc")
    assert (await run_step(fast, "h", probe=lambda: (Health.HEALTHY, ""), deep=None)).ok
    no_deep = await run_step(deep, "h", probe=lambda: (Health.HEALTHY, ""), deep=None)
    assert not no_deep.ok
    failed = await run_step(deep, "h", probe=lambda: (Health.HEALTHY, ""), deep=failing_deep)
    assert failed == wire.MaintenanceOutcome(False, "gpu 1: matmul slow")


async def test_the_session_runs_a_step_once_and_reports_it() -> None:
    session = _session(FakeTransport(), HeldExecutor())
    argv = (sys.executable, "-c", "print('patched')")
    command = agent_serde.run_maintenance_to_proto(
        RunMaintenance("maint:drv:h0001:1:action", "drv", "h0001", 1, "action", argv, 30, "fast")
    )
    first = session.handle_command(command)
    again = session.handle_command(command)
    assert first.status == agent_pb2.COMMAND_STATUS_APPLIED
    assert again.status == agent_pb2.COMMAND_STATUS_DUPLICATE
    deadline = time.monotonic() + 20
    while session.unacknowledged_reports < 1:
        assert time.monotonic() < deadline, "no maintenance report"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert session.unacknowledged_reports == 1
