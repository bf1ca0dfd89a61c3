"""``firsthop-agent``: the node agent (``run``), its deep health check (``check``), and a
simulated cluster (``simulate``).

``firsthop-agent run --server ADDR --host NAME [--address A] [--location LEAF,POD]
[--fake-gpus N] [--checkpoint-path DIR] [--log-dir DIR]`` runs this host's agent
(:mod:`agents.node`): it registers, heartbeats with the health verdict of its probes, runs the
ranks it is told to start as real processes, and reconnects after failures. It prints
``agent HOST connected to ADDR`` (flushed) once its first stream is open, then runs until
SIGTERM or SIGINT, which stop its ranks (SIGTERM, then SIGKILL after ``--stop-grace``).
A host the scheduler does not know exits 3 (``unknown_node``); one it refuses as it stands
(``topology_mismatch``, ``gpu_count_mismatch``) and bad flags exit 2.

``firsthop-agent check`` runs the deep health check here and prints its report
(:func:`agents.health.deepcheck.check_command`; torch is imported only then). Exit codes: 0
passed (or no GPU and none required), 1 a check failed, 2 no GPU with ``--require-gpu``.

Exit codes have one meaning across every firsthop command line
(:class:`topology.errors.ExitCode`, the README's table); errors become them through
:func:`_exit_on_error`.

``firsthop-agent simulate --server ADDR --topology FILE [--hosts N] [--shard I/N] [--exec]``
runs one simulated agent per host of the topology (the first N hosts with ``--hosts``; only
block I of N of them with ``--shard``, so several processes share a large cluster) in this
process, through the same AgentService contract the real per-host agent uses. Ranks
run as simulated work of ``FIRSTHOP_SIM_DURATION_S`` seconds (from the job's env; default
``--duration``), or as real local processes with ``--exec``. It prints
``simulating N agents against ADDR`` and, once every agent is connected,
``connected N agents`` (both flushed), then runs until SIGTERM or SIGINT.

Must not import ``scheduler`` (enforced by import-linter): the agent reaches the scheduler only
over gRPC, so it cannot use ``scheduler.cli.common`` either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer

from agents.accounts import UserMap
from agents.address import advertised_address
from agents.launch import ProcessExecutor
from agents.node import AgentSettings, FakeCheck, NodeAgent
from agents.ranks import RankExecutor, SimulatedExecutor
from agents.simulate import SimulatedCluster, identities, shard_range
from agents.tls import tls_of
from topology.errors import (
    ExitCode,
    FirsthopError,
    InvalidInputError,
    exit_code_of,
    format_error,
)
from topology.model import Topology


class FakeDeepCheck(StrEnum):
    """What a deep health check does on a host with fake GPUs."""

    PASS = "pass"
    FAIL = "fail"
    CPU = "cpu"


class CheckDevice(StrEnum):
    """Where ``check`` runs."""

    CUDA = "cuda"
    CPU = "cpu"


class ReportFormat(StrEnum):
    """How ``check`` prints its report."""

    TEXT = "text"
    JSON = "json"


_log = logging.getLogger("firsthop.agent")


app = typer.Typer(
    name="firsthop-agent",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Run the firsthop node agent.

    `run` is the per-host agent (health probes, rank launch and supervision, deep checks on
    request); `check` runs the deep health check once; `simulate` runs one simulated agent per
    host of a topology in this process (fake GPUs, real gRPC).
    """


@app.command("run")
def run(
    server: Annotated[
        str,
        typer.Option(
            "--server",
            "-s",
            envvar="FIRSTHOP_SERVER",
            help="Scheduler HOST:PORT, or a comma-separated list (a leader and its standbys).",
        ),
    ],
    host: Annotated[
        str, typer.Option(help="This host's name in the topology (default: the hostname).")
    ] = "",
    address: Annotated[
        str,
        typer.Option(
            help="How ranks on other hosts reach this one (default: the host name if it "
            "resolves, else the local address used to reach the scheduler)."
        ),
    ] = "",
    location: Annotated[
        str,
        typer.Option(help="Switches above the host, nearest first, comma-separated (checked)."),
    ] = "",
    fake_gpus: Annotated[
        int | None,
        typer.Option(min=1, help="Pretend to have N GPUs (fake probe) instead of using NVML."),
    ] = None,
    fake_fault: Annotated[
        list[str] | None,
        typer.Option(help="Fake probe fault POLL:KIND:GPU[:ARG...], e.g. 5:xid:1:79."),
    ] = None,
    fake_deep_check: Annotated[
        FakeDeepCheck, typer.Option(help="With --fake-gpus, what a deep health check does.")
    ] = FakeDeepCheck.PASS,
    checkpoint_path: Annotated[
        Path, typer.Option(help="File system whose free space the host probe watches.")
    ] = Path("."),
    log_dir: Annotated[
        Path | None,
        typer.Option(help="Where rank logs go (default: a firsthop-logs-HOST temp directory)."),
    ] = None,
    stop_grace: Annotated[
        float, typer.Option(min=0.0, help="SIGTERM-to-SIGKILL seconds when the agent stops.")
    ] = 30.0,
    max_backoff: Annotated[
        float, typer.Option(min=0.01, help="Ceiling of the reconnection backoff in seconds.")
    ] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
    cert: Annotated[
        Path | None, typer.Option(help="This host's certificate (certs issue-agent HOST).")
    ] = None,
    key: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
    ca: Annotated[
        Path | None, typer.Option(help="The cluster CA that signed the scheduler's certificate.")
    ] = None,
    user_map: Annotated[
        Path | None,
        typer.Option(help="YAML firsthop user -> local account (default: the same name)."),
    ] = None,
    run_as_agent: Annotated[
        bool,
        typer.Option(help="Run ranks as the agent's own account even as root with TLS."),
    ] = False,
) -> None:
    """Run this host's agent until SIGTERM (mutual TLS with --cert, --key and --ca).

    Run as root with mutual TLS, the agent starts each rank as its job user's local account
    (`--user-map` to map names; `--run-as-agent` to opt out); otherwise as itself.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    name = host or socket.gethostname()
    fake_check: FakeCheck = fake_deep_check.value
    chosen = advertised_address(name, server, address)
    if chosen.warning:
        _log.warning("%s", chosen.warning)
    else:
        _log.info("advertising %s (%s) to other hosts", chosen.address, chosen.source)
    with _exit_on_error():
        tls = tls_of(cert, key, ca)
        settings = AgentSettings(
            server=server,
            host=name,
            address=chosen.address,
            location=tuple(part for part in location.split(",") if part),
            fake_gpus=fake_gpus,
            fake_faults=tuple(fake_fault or ()),
            fake_deep_check=fake_check,
            checkpoint_path=checkpoint_path,
            log_dir=log_dir or Path(tempfile.gettempdir()) / f"firsthop-logs-{name}",
            stop_grace_s=stop_grace,
            reconnect_max_s=max_backoff,
            tls=tls,
            user_map=_user_map(tls is not None and not run_as_agent, user_map),
        )
        agent = NodeAgent(settings)
        asyncio.run(_run_agent(agent))


def _user_map(secure: bool, path: Path | None) -> dict[str, str] | None:
    """The account mapping ranks run through, or ``None`` (ranks run as the agent): only an
    agent running as root with mutual TLS switches accounts."""
    if not secure or os.geteuid() != 0:
        if path is not None:
            raise InvalidInputError(
                "--user-map needs an agent running as root with --cert/--key/--ca",
                reason="invalid_user_map",
            )
        return None
    return dict(UserMap.load(path).mapping) if path is not None else {}


async def _run_agent(agent: NodeAgent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(agent.run(stop))
    announce = asyncio.create_task(_announce_agent(agent))
    try:
        await runner
    finally:
        announce.cancel()


async def _announce_agent(agent: NodeAgent) -> None:
    await agent.connected()
    print(f"agent {agent.settings.host} connected to {agent.settings.server}", flush=True)


@app.command("check")
def check(
    device: Annotated[
        CheckDevice, typer.Option(help="cuda (the real check) or cpu (tiny sizes, to try it).")
    ] = CheckDevice.CUDA,
    require_gpu: Annotated[
        bool, typer.Option(help="Without a CUDA device, exit 2 instead of skipping.")
    ] = False,
    output: Annotated[
        ReportFormat, typer.Option("--output", "-o", help="Report format.")
    ] = ReportFormat.TEXT,
) -> None:
    """Run the deep health check on this host and print its report."""
    from agents.health.deepcheck import DeepCheckConfig, check_command

    config = DeepCheckConfig(
        device="cpu" if device is CheckDevice.CPU else "cuda", require_gpu=require_gpu
    )
    fmt: Literal["text", "json"] = "json" if output is ReportFormat.JSON else "text"
    raise typer.Exit(check_command(config, output=fmt))


@app.command("simulate")
def simulate(
    server: Annotated[
        str,
        typer.Option(
            "--server",
            "-s",
            envvar="FIRSTHOP_SERVER",
            help="Scheduler HOST:PORT, or a comma-separated list (a leader and its standbys).",
        ),
    ],
    topology_file: Annotated[
        Path, typer.Option("--topology", "-t", help="The cluster's topology file.")
    ],
    hosts: Annotated[
        int | None, typer.Option("--hosts", min=1, help="Simulate only the first N hosts.")
    ] = None,
    run_exec: Annotated[
        bool, typer.Option("--exec", help="Run ranks as real local processes (the job's argv).")
    ] = False,
    duration: Annotated[
        float,
        typer.Option(
            min=0.0, help="Seconds a simulated rank runs when the job's env does not say."
        ),
    ] = 60.0,
    log_dir: Annotated[
        Path | None, typer.Option(help="Where --exec ranks write their output.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the heartbeat jitter.")] = 0,
    shard: Annotated[
        str,
        typer.Option(
            help="I/N: simulate only shard I (0-based) of N even contiguous blocks of the "
            "hosts, so N processes share the cluster (one process runs short of CPU long "
            "before a scheduler does)."
        ),
    ] = "0/1",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
) -> None:
    """Run simulated agents for the hosts of a topology until SIGTERM."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with _exit_on_error():
        topology = Topology.load(topology_file)
    executor: RankExecutor
    if run_exec:
        logs = log_dir or Path(tempfile.mkdtemp(prefix="firsthop-ranks-"))
        executor = ProcessExecutor(logs)
    else:
        executor = SimulatedExecutor(default_duration_s=duration)
    with _exit_on_error():
        index, count = _parse_shard(shard)
    agents = identities(topology, hosts, (index, count))
    first = shard_range(min(hosts or len(topology.hosts), len(topology.hosts)), index, count).start
    cluster = SimulatedCluster(server, agents, executor, seed=seed, first_index=first)
    failed = asyncio.run(_serve(cluster, len(agents)))
    if failed:
        for host, why in sorted(failed.items())[:10]:
            typer.echo(f"error: agent {host}: {why}", err=True)
        raise typer.Exit(ExitCode.FAILED)


def _parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` as ``(I, N)``.

    Raises:
        InvalidInputError: not two integers with ``0 <= I < N``.
    """
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
        shard_range(0, *shard)
    except ValueError:
        raise InvalidInputError(
            f"--shard {text!r}: want I/N with 0 <= I < N, for example 0/4"
        ) from None
    return shard


async def _serve(cluster: SimulatedCluster, count: int) -> dict[str, str]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"simulating {count} agents against {cluster.server}", flush=True)
    runner = asyncio.create_task(cluster.run(stop))
    announce = asyncio.create_task(_announce(cluster, count))
    await runner
    announce.cancel()
    return cluster.failed


async def _announce(cluster: SimulatedCluster, count: int) -> None:
    await cluster.wait_connected()
    if cluster.connected >= count:
        print(f"connected {count} agents", flush=True)
    else:
        print(f"connected {cluster.connected} of {count} agents", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _exit_on_error() -> Iterator[None]:
    """A firsthop error as one ``error: <reason>: <message>`` line and its exit code (the
    same table as the scheduler's command lines: :func:`topology.errors.exit_code_of`)."""
    try:
        yield
    except FirsthopError as exc:
        typer.echo(format_error(exc), err=True)
        raise typer.Exit(exit_code_of(exc)) from None


def main() -> None:
    """Console-script entry point of ``firsthop-agent``."""
    app(prog_name="firsthop-agent")
