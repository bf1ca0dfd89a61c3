"""The peer in the control-plane benchmark: a real ``slurmctld`` and ``sbatch`` throughput.

:func:`running_slurmctld` starts Slurm's controller (22.05 or later, as Debian 12 ships it; CI
installs ``slurmctld`` and ``slurm-client``) in a temporary directory on a free port, with
``auth/none`` (no munge), ``select/cons_tres``, ``sched/backfill``, ``topology/tree`` loaded
from our own export of the benchmark's fabric, ``MaxJobCount`` raised above the job count, and
one node per host of the topology. No ``slurmd`` runs: the nodes never respond, so every job
stays pending, as the jobs submitted into firsthop's full cluster do; what is measured is the
submission path (``sbatch`` -> ``REQUEST_SUBMIT_BATCH_JOB`` -> job record and script written to
the state directory -> job id back), which is what a user waits for.

:func:`sbatch_all` runs one ``sbatch`` process per job, ``concurrency`` at a time, each asking
for the job's whole hosts (``-N GPUs/8 --exclusive``), and times them like the firsthop client
is timed. Differences that favour Slurm are kept, not hidden: Slurm saves its state
periodically rather than fsyncing each submission (firsthop's SQLite store fsyncs every commit),
and ``sbatch`` pays a process start that a long-lived gRPC client does not (a ``firsthop
submit`` process pays a Python start, much more).

Must not be imported by the product (benchmarks only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from topology.hostlist import compress_hostlist
from topology.model import Topology
from topology.slurm import export_tree

SLURMCTLD = shutil.which("slurmctld") or "/usr/sbin/slurmctld"
SBATCH = shutil.which("sbatch") or "/usr/bin/sbatch"
SCONTROL = shutil.which("scontrol") or "/usr/bin/scontrol"
START_WAIT_S = 60.0
GPUS_PER_HOST = 8


class SlurmUnavailableError(RuntimeError):
    """Slurm's binaries are missing (or this is not root)."""


def slurm_version() -> str:
    """``slurm-wlm 22.05.8`` or similar."""
    out = subprocess.run([SLURMCTLD, "-V"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _conf(work: Path, topology: Topology, max_jobs: int) -> str:
    host = socket.gethostname().split(".")[0]
    nodes = compress_hostlist(list(topology.hosts))
    return f"""ClusterName=fhbench
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/none
CredType=cred/none
SlurmctldPort={_free_port()}
StateSaveLocation={work}/state
SlurmctldPidFile={work}/slurmctld.pid
SlurmctldLogFile={work}/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SchedulerType=sched/backfill
TopologyPlugin=topology/tree
MaxJobCount={max_jobs}
SlurmdParameters=config_overrides
NodeName={nodes} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs=8 \
RealMemory=2000 State=UNKNOWN
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def running_slurmctld(topology: Topology, work: Path, max_jobs: int) -> Iterator[dict[str, str]]:
    """A ``slurmctld`` for ``topology``'s hosts; yields the environment for Slurm clients.

    Raises:
        SlurmUnavailableError: no Slurm binaries, or not root.
    """
    if os.geteuid() != 0 or not all(Path(p).exists() for p in (SLURMCTLD, SBATCH, SCONTROL)):
        raise SlurmUnavailableError(
            "needs root and Slurm: apt-get install slurmctld slurm-client (.ci/run does)"
        )
    work.mkdir(parents=True, exist_ok=True)
    (work / "state").mkdir(exist_ok=True)
    (work / "topology.conf").write_text(export_tree(topology))
    conf = work / "slurm.conf"
    conf.write_text(_conf(work, topology, max_jobs))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    log = (work / "slurmctld.out").open("ab")
    proc = subprocess.Popen(
        [SLURMCTLD, "-D", "-c", "-f", str(conf)], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + START_WAIT_S
        while True:
            ping = subprocess.run(
                [SCONTROL, "ping"], env=env, capture_output=True, text=True, check=False
            )
            if "is UP" in ping.stdout:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"slurmctld did not start; see {work}/slurmctld.log")
            time.sleep(0.2)  # polling the daemon's readiness
        yield env
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def sbatch_all(env: dict[str, str], gpus: list[int], concurrency: int) -> dict[str, Any]:
    """Submit one ``sbatch`` per entry of ``gpus`` (whole hosts), ``concurrency`` at a time."""
    latencies: list[float] = []
    errors = 0
    next_index = 0
    first_error = ""

    async def worker() -> None:
        nonlocal next_index, errors, first_error
        while next_index < len(gpus):
            i = next_index
            next_index += 1
            hosts = max(1, gpus[i] // GPUS_PER_HOST)
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                SBATCH,
                "--parsable",
                "-J",
                f"bench-{i}",
                "-N",
                str(hosts),
                "--exclusive",
                "-o",
                "/dev/null",
                "--wrap",
                "true",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            latencies.append(time.perf_counter() - started)
            if proc.returncode != 0 or not out.strip():
                errors += 1
                first_error = first_error or err.decode(errors="replace").strip()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    result: dict[str, Any] = {
        "jobs": len(gpus),
        "errors": errors,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "submissions_per_s": round(len(gpus) / wall, 1),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
    }
    if first_error:
        result["first_error"] = first_error
    return result
