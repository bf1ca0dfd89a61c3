"""The real per-host agent (``firsthop-agent run``): probes, verdicts, rank processes, checks.

One :class:`NodeAgent` per host composes the parts other modules provide:

- **GPUs**: from NVML (:class:`~agents.health.nvml.NvmlGpuProbe`) when the host has a driver,
  or ``fake_gpus`` fake ones (:class:`~agents.health.fake.FakeGpuProbe`, faults scriptable
  per poll), so one CPU machine can pretend to be several GPU hosts.
- **Health**: every heartbeat carries :func:`~agents.health.verdict.verdict` of the GPU and host
  probes (:class:`HostHealth`), mapped to the wire's words. A FAILED verdict makes the
  scheduler drain the node and move its jobs; SUSPECT keeps new jobs away.
- **Ranks**: real processes (:class:`~agents.launch.ProcessExecutor`), one per local rank,
  logs under ``log_dir``; stop is SIGTERM to the process group, then SIGKILL after the grace.
- **Deep health check** on the scheduler's request (before a drained node returns): the real
  check on GPUs (torch, imported only then), or with fake GPUs a scripted result or the CPU
  path of the check (:func:`deep_check_fn`).
- **The session** (:class:`~agents.session.AgentSession`): registration, the ``Connect`` stream,
  jittered heartbeats, reconnection with backoff and re-reporting of running ranks.

Stopping the agent (SIGTERM) stops its ranks (grace, then SIGKILL): ranks are children of the
agent and are not adopted by a later agent process.

Must not import ``scheduler``; imports torch only inside a deep check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.accounts import UserMap
from agents.health.errors import HealthProbeError
from agents.health.fake import FakeGpuProbe, Fault, parse_fault
from agents.health.host import LinuxHostProbe
from agents.health.probe import GpuProbe, GpuReading, HostProbe
from agents.health.verdict import Health, HealthThresholds, PreviousPoll, Verdict, verdict
from agents.launch import LogPiece, ProcessExecutor, read_rank_log
from agents.ranks import RankExecutor
from agents.session import AgentSession, HealthCheckFn, SessionOptions
from agents.timing import Backoff
from agents.tls import AgentTls, open_channel
from agents.transport import FailoverAgentTransport, parse_addresses
from agents.wire import AgentIdentity, HealthCheckOutcome
from topology.errors import InvalidInputError

AGENT_VERSION: Final = "firsthop-agent/0.1"
CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnection backoff (1 s growing to 120 s by default) would keep a restarted
    # scheduler unreachable long after it is back; the session paces its retries itself.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)
FakeCheck = Literal["pass", "fail", "cpu"]


class AgentSettings(BaseModel):
    """Everything ``firsthop-agent run`` is told.

    Attributes:
        server: the scheduler's ``HOST:PORT``.
        host: this host's name in the topology.
        address: how ranks on other hosts reach this one (``MASTER_ADDR`` of the jobs whose
            rank 0 it runs); empty: the host name must resolve.
        location: switch domains above the host, nearest first (checked by the scheduler
            against its topology); empty: not checked.
        fake_gpus: pretend to have this many GPUs (fake probe) instead of asking NVML.
        fake_faults: faults of the fake probe, ``POLL:KIND:GPU[:ARG...]`` (applied before
            that poll; one poll per heartbeat), e.g. ``5:xid:1:79``.
        fake_deep_check: with fake GPUs, what a deep health check does: ``pass``, ``fail``
            (scripted results) or ``cpu`` (the check's CPU path, with torch).
        checkpoint_path: file system whose free space the host probe watches.
        log_dir: where rank logs (and checkpoint report files) go.
        stop_grace_s: SIGTERM-to-SIGKILL grace for ranks when the agent itself stops.
        reconnect_max_s: ceiling of the reconnection backoff (keep it well under the
            scheduler's heartbeat timeout, so a restarted scheduler hears from the agent in
            time).
        thresholds: limits of the health verdict.
        tls: mutual TLS to the scheduler's agents' port (``None``: a plain channel).
        user_map: run ranks as their job user's local account, through this mapping of
            firsthop users to accounts (:mod:`agents.accounts`); ``None``: as the agent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: str
    host: str = Field(min_length=1)
    address: str = ""
    location: tuple[str, ...] = ()
    fake_gpus: int | None = Field(default=None, ge=1)
    fake_faults: tuple[str, ...] = ()
    fake_deep_check: FakeCheck = "pass"
    checkpoint_path: Path
    log_dir: Path
    stop_grace_s: float = Field(default=30.0, ge=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    thresholds: HealthThresholds = HealthThresholds()
    tls: AgentTls | None = None
    user_map: dict[str, str] | None = None


def parse_fault_schedule(items: Sequence[str]) -> dict[int, list[Fault]]:
    """``POLL:KIND:GPU[:ARG...]`` strings as a fake probe schedule.

    Raises:
        InvalidInputError: reason ``invalid_fake_fault``.
    """
    schedule: dict[int, list[Fault]] = {}
    for item in items:
        poll, sep, fault = item.partition(":")
        if not sep or not poll.isdigit() or int(poll) < 1:
            raise InvalidInputError(
                f"bad fake fault {item!r}: expected POLL:KIND:GPU[:ARG...], POLL >= 1",
                reason="invalid_fake_fault",
            )
        schedule.setdefault(int(poll), []).append(parse_fault(fault))
    return schedule


def open_gpu_probe(settings: AgentSettings) -> tuple[GpuProbe, int]:
    """The GPU probe of this host and its GPU count (fake GPUs, else NVML).

    Raises:
        NvmlUnavailableError: no fake GPUs asked for and NVML cannot be used.
        InvalidInputError: bad fake faults; or NVML found no GPU.
    """
    if settings.fake_gpus is not None:
        probe = FakeGpuProbe(
            settings.fake_gpus,
            seed=settings.host,
            schedule=parse_fault_schedule(settings.fake_faults),
        )
        return probe, settings.fake_gpus
    from agents.health.nvml import NvmlGpuProbe

    nvml = NvmlGpuProbe.open()
    if nvml.gpu_count == 0:
        nvml.close()
        raise InvalidInputError(
            "NVML found no GPU on this host (use --fake-gpus N to pretend)", reason="no_gpus"
        )
    return nvml, nvml.gpu_count


class HostHealth:
    """The session's health probe: one poll of the GPU and host probes, judged.

    Args:
        gpus: the GPU probe.
        host: the host probe.
        thresholds: the verdict's limits.
        clock: monotonic seconds (for correctable-ECC rates between polls).
    """

    def __init__(
        self,
        gpus: GpuProbe,
        host: HostProbe,
        thresholds: HealthThresholds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gpus = gpus
        self._host = host
        self._thresholds = thresholds
        self._clock = clock
        self._previous: tuple[tuple[GpuReading, ...], float] | None = None
        self.latest: Verdict | None = None
        """The latest verdict (``None`` before the first poll)."""

    def poll(self) -> Verdict:
        """Read both probes once and judge them (an unreadable GPU probe is SUSPECT)."""
        now = self._clock()
        host = self._host.read()
        try:
            gpus = self._gpus.read()
        except HealthProbeError as exc:
            errors = (*host.probe_errors, f"gpu probe: {exc}")
            result = verdict((), replace(host, probe_errors=errors), None, self._thresholds)
            self.latest = result
            return result
        previous = None
        if self._previous is not None:
            previous = PreviousPoll(self._previous[0], now - self._previous[1])
        result = verdict(gpus, host, previous, self._thresholds)
        self._previous = (gpus, now)
        self.latest = result
        return result

    def __call__(self) -> tuple[Health, str]:
        """The verdict, with its reasons as one line."""
        result = self.poll()
        detail = "; ".join(f"{r.code}: {r.message}" for r in result.reasons)
        return result.health, detail


def deep_check_fn(settings: AgentSettings) -> HealthCheckFn:
    """What a ``RunHealthCheck`` command runs on this host (see the module docstring)."""
    if settings.fake_gpus is not None and settings.fake_deep_check != "cpu":
        passed = settings.fake_deep_check == "pass"

        async def scripted() -> HealthCheckOutcome:
            word = "passed" if passed else "failed"
            return HealthCheckOutcome(
                passed,
                f"fake deep check {word} (--fake-gpus, --fake-deep-check "
                f"{settings.fake_deep_check})",
            )

        return scripted
    device: Literal["cuda", "cpu"] = "cpu" if settings.fake_gpus is not None else "cuda"

    async def real() -> HealthCheckOutcome:
        return await asyncio.to_thread(run_deep_check_now, device)

    return real


CPU_CHECK_SIZES: Final[Mapping[str, int]] = {
    "matmul_size": 256,
    "matmul_iterations": 3,
    "accuracy_size": 128,
    "memory_max_bytes": 16 * 1024 * 1024,
    "memory_chunk_bytes": 4 * 1024 * 1024,
    "h2d_bytes": 4 * 1024 * 1024,
    "h2d_iterations": 3,
    "allreduce_bytes": 1024 * 1024,
    "allreduce_iterations": 3,
    "allreduce_warmup": 1,
}
"""Sizes of the CPU path (a host with fake GPUs): the same checks in a few seconds."""


def run_deep_check_now(device: Literal["cuda", "cpu"]) -> HealthCheckOutcome:
    """Run the deep health check here (imports torch) and summarise it."""
    from agents.health.deepcheck import DeepCheckConfig, Outcome, run_deep_check

    sizes = CPU_CHECK_SIZES if device == "cpu" else {}
    report = run_deep_check(
        DeepCheckConfig.model_validate({"device": device, "require_gpu": device == "cuda", **sizes})
    )
    if report.skipped_reason is not None:
        return HealthCheckOutcome(
            False, f"deep check skipped: {report.skipped_reason}", report.model_dump_json()
        )
    failed = [
        f"{r.name}" + (f" (GPU {r.gpu_index})" if r.gpu_index is not None else "")
        for r in report.results
        if r.outcome is Outcome.FAIL
    ]
    summary = (
        f"failed: {', '.join(failed)}"
        if failed
        else f"passed {len(report.results)} checks on {device} in {report.duration_s:.1f} s"
    )
    return HealthCheckOutcome(not failed, summary, report.model_dump_json())


class NodeAgent:
    """One host's agent (see the module docstring).

    Args:
        settings: what the agent was told.
        gpu_probe: the host's GPU probe and GPU count (default: :func:`open_gpu_probe`).
        host_probe: the host probe (default: Linux, on ``checkpoint_path``).
        executor: runs ranks (default: real processes logging under ``log_dir``).
        options: session options (tests inject waits and backoff); the agent fills in the
            health probe, deep check and log reader unless already set.
        rng: randomness for heartbeat jitter and backoff.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        gpu_probe: tuple[GpuProbe, int] | None = None,
        host_probe: HostProbe | None = None,
        executor: RankExecutor | None = None,
        options: SessionOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._gpus, gpu_count = gpu_probe if gpu_probe is not None else open_gpu_probe(settings)
        host = host_probe or LinuxHostProbe(settings.checkpoint_path)
        self.health = HostHealth(self._gpus, host, settings.thresholds)
        self.executor = executor or ProcessExecutor(
            settings.log_dir,
            users=None if settings.user_map is None else UserMap(settings.user_map),
        )
        rng = rng or random.Random()
        opts = options or SessionOptions(
            rng=rng, backoff=Backoff(max_s=settings.reconnect_max_s, rng=rng)
        )
        opts.health = self.health
        if opts.health_check is None:
            opts.health_check = deep_check_fn(settings)
        if opts.logs is None:
            log_dir = settings.log_dir

            def logs(job_id: str, attempt: int, rank: int, offset: int, size: int) -> LogPiece:
                return read_rank_log(log_dir, job_id, attempt, rank, offset=offset, max_bytes=size)

            opts.logs = logs
        self.identity = AgentIdentity(
            host=settings.host,
            gpus=gpu_count,
            location=settings.location,
            agent_version=AGENT_VERSION,
            agent_instance=f"{socket.gethostname()}-{os.getpid()}-{time.time_ns():x}",
            address=settings.address,
        )
        self._options = opts
        self.session: AgentSession | None = None
        self._session_made = asyncio.Event()

    async def connected(self) -> None:
        """Return once the session's first stream is open."""
        await self._session_made.wait()
        if self.session is not None:
            await self.session.connected.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then stop the ranks and close the probes.

        Raises:
            FatalAgentError: the scheduler refused this host.
        """
        # ``server`` may list several schedulers (a leader and standbys): follow the leader.
        tls = self.settings.tls
        transport = FailoverAgentTransport(
            parse_addresses(self.settings.server),
            lambda address: open_channel(address, tls, CHANNEL_OPTIONS),
        )
        session = AgentSession(self.identity, transport, self.executor, self._options)
        self.session = session
        self._session_made.set()
        try:
            await session.run(stop)
        finally:
            await session.supervisor.stop_all(self.settings.stop_grace_s)
            await transport.close()
            with contextlib.suppress(HealthProbeError):
                self._gpus.close()
