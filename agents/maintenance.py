"""Maintenance steps on the agent's host: run an operator's action, or the health check.

A campaign (``firsthopctl maintenance start ... -- COMMAND ARGS...``) sends each host a
``RunMaintenance`` command. Step ``action`` runs the argv as given, never through a shell,
with ``FIRSTHOP_HOST`` and ``FIRSTHOP_CAMPAIGN`` added to the agent's environment, in its own
process group (so a timeout kills everything it started), stdout and stderr captured together
(the tail is reported). Step ``check`` runs the host's health check: the fast probe the
heartbeats use, or the deep check when the campaign asked for ``--health-check deep``.

Must not import ``scheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from agents.health.verdict import Health
from agents.wire import HealthCheckOutcome, MaintenanceCommand, MaintenanceOutcome

OUTPUT_TAIL: Final = 8192
"""Bytes of captured output kept for the report (the end of it)."""
KILL_WAIT_S: Final = 5.0


async def run_action(
    argv: Sequence[str], *, timeout_s: float, env: Mapping[str, str]
) -> MaintenanceOutcome:
    """Run ``argv`` with ``env`` added to this process's environment, killed after
    ``timeout_s``; ok when it exits 0."""
    if not argv:
        return MaintenanceOutcome(False, "cannot run: empty command")
    full_env = {**os.environ, **env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    except OSError as exc:
        return MaintenanceOutcome(False, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    assert proc.stdout is not None
    tail = bytearray()
    reader = asyncio.create_task(_collect(proc.stdout, tail))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_WAIT_S)
    with contextlib.suppress(TimeoutError):
        # Children that kept the pipe open are gone with the group; do not wait forever.
        await asyncio.wait_for(reader, KILL_WAIT_S)
    reader.cancel()
    output = bytes(tail).decode("utf-8", errors="replace")
    code = proc.returncode
    if timed_out:
        return MaintenanceOutcome(False, f"timeout after {timeout_s:g} s", output, code)
    assert code is not None
    if code == 0:
        return MaintenanceOutcome(True, "", output, 0)
    detail = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    return MaintenanceOutcome(False, detail, output, code)


async def _collect(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Read ``stream`` to its end, keeping the last :data:`OUTPUT_TAIL` bytes."""
    while chunk := await stream.read(65536):
        tail += chunk
        if len(tail) > OUTPUT_TAIL:
            del tail[: len(tail) - OUTPUT_TAIL]


HealthProbe = Callable[[], tuple[Health, str]]
DeepCheck = Callable[[], Awaitable[HealthCheckOutcome]]


async def run_step(
    command: MaintenanceCommand,
    host: str,
    *,
    probe: HealthProbe,
    deep: DeepCheck | None,
) -> MaintenanceOutcome:
    """Run one maintenance step of ``command`` on ``host``."""
    if command.step == "action":
        env = {"FIRSTHOP_HOST": host, "FIRSTHOP_CAMPAIGN": command.campaign}
        return await run_action(command.argv, timeout_s=command.timeout_s, env=env)
    if command.step != "check":
        return MaintenanceOutcome(False, f"unknown maintenance step {command.step!r}")
    if command.health_check == "deep":
        if deep is None:
            return MaintenanceOutcome(False, "deep health check asked; this agent runs none")
        outcome = await deep()
        return MaintenanceOutcome(outcome.passed, "" if outcome.passed else outcome.summary)
    health, detail = probe()
    if health is Health.HEALTHY:
        return MaintenanceOutcome(True)
    return MaintenanceOutcome(False, f"{health.name.lower()}: {detail}")
