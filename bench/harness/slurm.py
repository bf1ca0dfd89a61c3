"""A throwaway single-host Slurm cluster: one ``slurmctld`` and one ``slurmd`` per fake node.

For tests, benchmarks and demos of the Slurm plug-in on a machine without a cluster
(``shared/research/infra-facts.md`` section 1 measured the recipe on Slurm 22.05.8): every
node of a topology becomes a Slurm node served by its own ``slurmd -N NAME`` on a free port
(Slurm's ``MULTIPLE_SLURMD`` build), GPUs are GRES whose ``File=`` are character devices
cloned from ``/dev/null`` with ``mknod`` (plain files give no ``CUDA_VISIBLE_DEVICES``), auth
is ``auth/none`` (no munge), and every path (state, spool, logs, pid files) lives in one work
directory. Daemons are stopped by the pids in their pid files only (SIGTERM, then SIGKILL
after a deadline: ``slurmd`` may ignore SIGTERM while it retries a dead controller).

Part of the test and benchmark harness, never of the product. Needs root and the ``slurmctld``,
``slurmd`` and ``slurm-client`` packages; :func:`missing` says what is absent. Must not import
``scheduler``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from topology.hostlist import compress_hostlist, expand_hostlist
from topology.model import Topology
from topology.slurm import export_tree

BINARIES = ("slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch", "srun")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
CLIENT_TIMEOUT_S = 30.0


def missing() -> str | None:
    """Why a local cluster cannot start here, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their users)"
    absent = [b for b in BINARIES if _which(b) is None]
    if absent:
        return (
            f"Slurm binaries missing: {', '.join(absent)} "
            "(apt-get install slurmctld slurmd slurm-client; .ci/run does)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            os.mknod(Path(tmp) / "probe", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError as exc:
            return f"cannot create fake GPU devices with mknod here ({exc})"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalSlurm:
    """A Slurm cluster of the topology's hosts on this machine.

    Attributes:
        conf_dir: where ``slurm.conf``, ``gres.conf`` and ``topology.conf`` go (Slurm reads
            the last two from the directory of ``slurm.conf``). A ``topology.conf`` already
            there (from ``firsthopctl slurm install``) is kept.
        work_dir: state, spool, logs, pid files and fake GPU devices.
        topology: the hosts become nodes (names unchanged), with their GPU counts.
        include: a file ``slurm.conf`` includes (the plug-in's ``slurm.conf.firsthop``).
        extra: more ``slurm.conf`` lines (before the node lines).
        cpus: CPUs each fake node claims (``SlurmdParameters=config_overrides``).
    """

    conf_dir: Path
    work_dir: Path
    topology: Topology
    include: Path | None = None
    extra: Sequence[str] = ()
    cpus: int = 8
    _ctld_port: int = field(default=0, init=False)
    _started: bool = field(default=False, init=False)

    @property
    def conf(self) -> Path:
        """The ``slurm.conf`` path."""
        return self.conf_dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm commands against this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def nodes(self) -> list[str]:
        """Node names, in topology order."""
        return list(self.topology.hosts)

    def write_config(self) -> None:
        """Write ``slurm.conf``, ``gres.conf``, ``topology.conf`` (if absent), fake devices."""
        work = self.work_dir
        for sub in ("state", "spool", "log", "run", "dev"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        gpus = max((h.gpus for h in self.topology.hosts.values()), default=0)
        for i in range(gpus):
            device = work / "dev" / f"nvidia{i}"
            if not device.exists():
                os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        topo = self.conf_dir / "topology.conf"
        if not topo.exists():
            topo.write_text(export_tree(self.topology))
        self._ctld_port = free_port()
        self.conf.write_text(self._slurm_conf())
        gres = ["AutoDetect=off"]
        for host in self.topology.hosts.values():
            if host.gpus:
                files = f"{work}/dev/nvidia[0-{host.gpus - 1}]"
                gres.append(f"NodeName={host.name} Name=gpu File={files}")
        (self.conf_dir / "gres.conf").write_text("\n".join(gres) + "\n")

    def _slurm_conf(self) -> str:
        work = self.work_dir
        me = socket.gethostname().split(".")[0]
        lines = [
            "ClusterName=firsthoplocal",
            f"SlurmctldHost={me}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/none",
            "CredType=cred/none",
            f"SlurmctldPort={self._ctld_port}",
            f"StateSaveLocation={work}/state",
            f"SlurmdSpoolDir={work}/spool/%n",
            f"SlurmctldPidFile={work}/run/slurmctld.pid",
            f"SlurmdPidFile={work}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={work}/log/slurmctld.log",
            f"SlurmdLogFile={work}/log/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=300",
            "GresTypes=gpu",
            *self.extra,
        ]
        if self.include is not None:
            lines.append(f"Include {self.include}")
        for host in self.topology.hosts.values():
            gres = f" Gres=gpu:{host.gpus}" if host.gpus else ""
            lines.append(
                f"NodeName={host.name} NodeHostname={me} NodeAddr=127.0.0.1 Port={free_port()} "
                f"CPUs={self.cpus} RealMemory=2000{gres} State=UNKNOWN"
            )
        lines.append(
            f"PartitionName=main Nodes={compress_hostlist(self.nodes)} Default=YES "
            "MaxTime=INFINITE State=UP"
        )
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the configuration, start every daemon, wait until all nodes are idle.

        Raises:
            RuntimeError: a daemon did not start or nodes stayed not idle (log tail included).
        """
        self.write_config()
        self._started = True
        env = self.env
        subprocess.run(
            [_bin("slurmctld"), "-c", "-f", str(self.conf)], env=env, check=True, timeout=30
        )
        for node in self.nodes:
            subprocess.run(
                [_bin("slurmd"), "-N", node, "-f", str(self.conf)], env=env, check=True, timeout=30
            )
        self.wait_idle(self.nodes)

    def wait_idle(self, nodes: Sequence[str], timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until every node in ``nodes`` is idle.

        Raises:
            RuntimeError: the deadline passed.
        """
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.node_states()
            if all(states.get(n) == "idle" for n in nodes):
                return
            time.sleep(0.2)  # polling the daemons' state with a deadline
        raise RuntimeError(f"nodes not idle after {timeout_s:g} s: {states}\n{self.log_tail()}")

    def node_states(self) -> dict[str, str]:
        """Node name -> Slurm state (``idle``, ``allocated``, ``drained``, ...)."""
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False)
        states: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
        """Run a Slurm client command against this cluster; return its stdout.

        Raises:
            RuntimeError: ``check`` and the command failed.
        """
        command = [_bin(argv[0]), *argv[1:]]
        try:
            done = subprocess.run(
                command,
                env=self.env,
                cwd=self.work_dir,  # a job's default output file lands here, not in our cwd
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            if check:
                raise RuntimeError(f"{' '.join(argv)} timed out") from exc
            return ""
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def would_allocate(self, nodes: int, *options: str) -> list[str] | None:
        """The nodes Slurm would give a job of ``nodes`` nodes right now (``sbatch
        --test-only``, the selection code of a real start), or ``None`` when it could not
        start within a few seconds (busy nodes) or Slurm did not say."""
        try:
            done = subprocess.run(
                [_bin("sbatch"), "--test-only", f"-N{nodes}", *options, "--wrap", "true"],
                env=self.env,
                cwd=self.work_dir,
                capture_output=True,
                text=True,
                timeout=CLIENT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        said = done.stdout + done.stderr  # sbatch writes the estimate to stderr
        match = re.search(r"to start at (\S+) using \d+ processors on nodes (\S+)", said)
        if match is None:
            return None
        with contextlib.suppress(ValueError):
            start = time.mktime(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
            if start > time.time() + 5:
                return None
        return expand_hostlist(match.group(2))

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the controller's log (for error messages)."""
        log = self.work_dir / "log" / "slurmctld.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else "(no slurmctld log)"

    def stop(self) -> None:
        """Cancel every job, then stop every daemon this cluster started (by pid file): TERM,
        then KILL. Jobs go first so no ``slurmstepd`` outlives its ``slurmd``. Idempotent."""
        if not self._started:
            return
        self._cancel_jobs()
        pids: list[int] = []
        for pid_file in sorted((self.work_dir / "run").glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pid_file.read_text().strip()))
                pid_file.unlink()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)  # waiting for the daemons to exit, with a deadline
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._started = False

    def _cancel_jobs(self, timeout_s: float = 15.0) -> None:
        jobs = self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=10).split()
        if not jobs:
            return
        self.run(["scancel", *jobs], check=False, timeout=10)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=10).split():
                return
            time.sleep(0.2)  # waiting for the cancelled jobs to leave, with a deadline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); reap it if it is our child, else look at /proc.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _bin(name: str) -> str:
    path = _which(name)
    if path is None:
        raise RuntimeError(f"{name} not found")
    return path
