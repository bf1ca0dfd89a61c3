"""The topology/tree export, loaded by a real ``slurmctld`` (Slurm 22.05 on Debian 12).

The controller runs in a temporary directory on a free port with ``auth/none`` (no munge),
reads our ``topology.conf``, and ``scontrol show topology`` must report the same tree: every
switch with its level, nodes and child switches. ``.ci/run`` installs ``slurmctld`` and
``slurm-client`` so this runs in CI; elsewhere it skips.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from topology.csv_import import parse_hosts_csv
from topology.generators import fat_tree
from topology.hostlist import compress_hostlist, expand_hostlist
from topology.model import Topology
from topology.slurm import export_tree
from topology.spec import TopologySpec

pytestmark = pytest.mark.slurm

SLURMCTLD = shutil.which("slurmctld") or "/usr/sbin/slurmctld"
SCONTROL = shutil.which("scontrol") or "/usr/bin/scontrol"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slurm_conf(tmp: Path, nodes: str, port: int) -> str:
    host = socket.gethostname().split(".")[0]
    return f"""ClusterName=fhtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/none
CredType=cred/none
SlurmctldPort={port}
StateSaveLocation={tmp}/state
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmctldLogFile={tmp}/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
TopologyPlugin=topology/tree
NodeName={nodes} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs=8 \
RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _show_topology(spec: TopologySpec, tmp: Path) -> str:
    """Start slurmctld on ``spec``'s tree export and return ``scontrol show topology``."""
    if os.geteuid() != 0 or not Path(SLURMCTLD).exists() or not Path(SCONTROL).exists():
        pytest.skip("needs root and Slurm (apt-get install slurmctld slurm-client; .ci/run does)")
    topology = Topology.from_spec(spec)
    (tmp / "state").mkdir()
    (tmp / "topology.conf").write_text(export_tree(topology))
    conf = tmp / "slurm.conf"
    conf.write_text(_slurm_conf(tmp, compress_hostlist(list(topology.hosts)), _free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run([SLURMCTLD, "-c", "-f", str(conf)], env=env, check=True, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while True:
            shown = subprocess.run(
                [SCONTROL, "show", "topology"],
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if shown.returncode == 0 and "SwitchName=" in shown.stdout:
                return shown.stdout
            if time.monotonic() > deadline:
                log = (
                    (tmp / "slurmctld.log").read_text() if (tmp / "slurmctld.log").exists() else ""
                )
                pytest.fail(f"scontrol show topology failed: {shown.stderr}\n{log[-2000:]}")
            time.sleep(0.2)  # polling the daemon's readiness, not synchronising on a guess
    finally:
        pid = (tmp / "slurmctld.pid").read_text().strip()
        os.kill(int(pid), signal.SIGTERM)


def _parse(text: str) -> dict[str, dict[str, str]]:
    switches: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        if "SwitchName" in fields:
            switches[fields["SwitchName"]] = fields
    return switches


def test_slurm_reads_the_fat_tree_export(tmp_path: Path) -> None:
    shown = _parse(_show_topology(fat_tree(2, 2, 3, gpus_per_host=8), tmp_path))
    leaves = {n: s for n, s in shown.items() if s["Level"] == "0"}
    assert sorted(leaves) == ["pod00-leaf00", "pod00-leaf01", "pod01-leaf00", "pod01-leaf01"]
    assert expand_hostlist(leaves["pod01-leaf00"]["Nodes"]) == ["h0007", "h0008", "h0009"]
    pods = {n: s for n, s in shown.items() if s["Level"] == "1"}
    assert expand_hostlist(pods["pod00"]["Switches"]) == ["pod00-leaf00", "pod00-leaf01"]
    root = [s for s in shown.values() if s["Level"] == "2"]
    assert len(root) == 1
    assert len(expand_hostlist(root[0]["Nodes"])) == 12


def test_slurm_reads_repeated_leaf_names_as_distinct_switches(tmp_path: Path) -> None:
    csv_text = Path(__file__).parents[1].joinpath("examples", "hosts.csv").read_text()
    spec = parse_hosts_csv(csv_text, name="example")
    shown = _parse(_show_topology(spec, tmp_path))
    leaves = sorted(n for n, s in shown.items() if s["Level"] == "0")
    # l01 appears under s1 and under s2: two switches in Slurm too.
    assert leaves == ["s1_l01", "s1_l02", "s2_l01"]
    assert expand_hostlist(shown["s2_l01"]["Nodes"]) == ["h0009", "h0010", "h0011", "h0012"]
