"""The Slurm plug-in inside real Slurm 22.05 daemons started by the test.

One ``slurmctld`` and six ``slurmd`` (fake nodes n1..n6 with four fake GPUs each, under two
leaves whose names interleave) run in a temporary directory on free ports, with the plug-in
installed by ``firsthopctl slurm install`` and included from ``slurm.conf``. Jobs are real
``sbatch`` scripts whose ``srun`` tasks print their environment.

Requeue timing (measured, ``shared/research/infra-facts.md`` section 1 and these tests): a
batch job requeued after a Prolog failure may not start before its credential expires,
``cred_expire`` + 1 s (120 s by default), and then waits for the next scheduling pass. The
test cluster sets ``AuthInfo=cred_expire=5`` and ``SchedulerParameters=sched_interval=2``
(passed through ``install --scheduler-parameters``), so the retry comes after about 7 s; the
test waits on the job's state with a deadline, never a fixed sleep.

Skips without root or the Slurm packages (``.ci/run`` installs slurmctld, slurmd and
slurm-client). Daemons are stopped in the fixture's teardown.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pytest
from slurm_builders import GPUS, expected_ranks, lab, lab_spec, leaf_of

from bench.harness import slurm as localcluster
from bench.harness.slurm import LocalSlurm
from topology.hostlist import expand_hostlist
from topology.spec import dump_spec

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.timeout(240)]

JOB_TIMEOUT_S = 60.0
FIELDS = (
    "SLURMD_NODENAME",
    "SLURM_LOCALID",
    "SLURM_PROCID",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "FIRSTHOP_NODE_RANK",
    "FIRSTHOP_NNODES",
)
SCRIPT = """#!/bin/bash
srun --ntasks-per-node={tasks} bash -c 'echo TASK {fields}'
srun --ntasks-per-node=1 bash -c 'echo NODE {fields}'
"""


@dataclass
class Lab:
    cluster: LocalSlurm
    root: Path
    etc: Path
    state: Path
    local: Path

    @property
    def log(self) -> Path:
        return self.etc / "firsthop-slurm.log"

    def fake_probe(self, node: str, *faults: str) -> None:
        lines = [f"FIRSTHOP_FAKE_GPUS={GPUS}", *(f"FIRSTHOP_FAKE_FAULT={f}" for f in faults)]
        (self.state / "fake-probe" / f"{node}.env").write_text("\n".join(lines) + "\n")

    def submit(self, *args: str, tasks: int = GPUS) -> str:
        fields = " ".join(f"{name}=${{{name}:-none}}" for name in FIELDS)
        script = self.root / f"job{time.monotonic_ns()}.sh"
        script.write_text(SCRIPT.format(tasks=tasks, fields=fields))
        out = self.cluster.run(
            [
                "sbatch",
                "--parsable",
                f"--gres=gpu:{GPUS}",
                f"--ntasks-per-node={tasks}",
                "-o",
                str(self.root / "out.%j"),
                *args,
                str(script),
            ]
        )
        return out.strip().split(";")[0]

    def job(self, job: str) -> dict[str, str]:
        text = self.cluster.run(["scontrol", "show", "job", "-o", job], check=False)
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_done(self, job: str, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self.job(job)
            if info.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}:
                return info
            time.sleep(0.2)  # polling the job's state with a deadline
        pytest.fail(
            f"job {job} not done after {timeout_s:g} s: {self.job(job)}\n"
            f"{self.log_text()}\n{self.cluster.log_tail()}"
        )

    def wait_for(self, what: str, check: object, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if callable(check) and check():
                return
            time.sleep(0.1)  # polling a file or state with a deadline
        pytest.fail(f"{what} not reached after {timeout_s:g} s\n{self.log_text()}")

    def output(self, job: str) -> list[dict[str, str]]:
        rows = []
        for line in (self.root / f"out.{job}").read_text().splitlines():
            kind, _, rest = line.partition(" ")
            if kind in {"TASK", "NODE"}:
                row = dict(item.split("=", 1) for item in rest.split())
                row["kind"] = kind
                rows.append(row)
        return rows

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def log_lines(self, job: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if f" job={job} " in line]


@pytest.fixture(scope="module")
def lab_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    why = localcluster.missing()
    if why is not None:
        pytest.skip(f"real Slurm tests: {why}")
    root = tmp_path_factory.mktemp("slurmlab")
    etc, state, local = root / "etc", root / "state", root / "local"
    topo_file = root / "lab.yaml"
    dump_spec(lab_spec(), topo_file)
    ctl = Path(sys.executable).with_name("firsthopctl")
    subprocess.run(
        [
            str(ctl),
            "slurm",
            "install",
            "--topology",
            str(topo_file),
            "--dir",
            str(etc),
            "--state-dir",
            str(state),
            "--local-dir",
            str(local),
            "--slurm-conf",
            str(etc / "slurm.conf"),
            "--scheduler-parameters",
            "sched_interval=2",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    cluster = LocalSlurm(
        etc,
        root / "work",
        lab(),
        include=etc / "slurm.conf.firsthop",
        extra=["AuthInfo=cred_expire=5"],
    )
    the_lab = Lab(cluster, root, etc, state, local)
    for node in cluster.nodes:
        the_lab.fake_probe(node)
    try:
        cluster.start()
        yield the_lab
    finally:
        cluster.stop()


def _by_node(rows: list[dict[str, str]], kind: str) -> dict[tuple[str, int], dict[str, str]]:
    return {(r["SLURMD_NODENAME"], int(r["SLURM_LOCALID"])): r for r in rows if r["kind"] == kind}


def test_plugin_is_installed_in_slurm(lab_cluster: Lab) -> None:
    config = lab_cluster.cluster.run(["scontrol", "show", "config"])
    hooks = lab_cluster.etc / "hooks"
    assert re.search(rf"PrologSlurmctld\s+=\s+{hooks}/prolog-ctld", config)
    assert re.search(rf"TaskProlog\s+=\s+{hooks}/task-prolog", config)
    assert "nohold_on_prolog_fail" in config
    assert re.search(r"PrologFlags\s+=\s+Alloc", config)
    topology = lab_cluster.cluster.run(["scontrol", "show", "topology"])
    assert re.search(r"SwitchName=la .*Nodes=n\[1,3,5\]", topology)


def test_srun_tasks_get_firsthops_ranks(lab_cluster: Lab) -> None:
    job = lab_cluster.submit("-N2", "--comment=firsthop:tp=2,dp=4")
    info = lab_cluster.wait_done(job)
    assert info["JobState"] == "COMPLETED", info
    nodes = expand_hostlist(info["NodeList"])
    expected = expected_ranks(lab(), nodes, tp=2, dp=4)
    tasks = _by_node(lab_cluster.output(job), "TASK")
    assert len(tasks) == 2 * GPUS
    got = {int(t["RANK"]): (node, local) for (node, local), t in tasks.items()}
    assert got == expected
    master = expected[0][0]
    for task in tasks.values():
        assert task["WORLD_SIZE"] == "8"
        assert task["LOCAL_RANK"] == task["SLURM_LOCALID"]
        assert task["MASTER_ADDR"] == master
        assert task["FIRSTHOP_NNODES"] == "2"
        assert 20000 <= int(task["MASTER_PORT"]) < 30000
    # Epilog and EpilogSlurmctld clean up: no slice on the nodes, no table in the state dir.
    lab_cluster.wait_for(
        "cleanup",
        lambda: (
            not any(lab_cluster.local.glob(f"*/{job}.env"))
            and not (lab_cluster.state / "jobs" / job).exists()
        ),
    )


def test_reordering_keeps_dp_groups_in_a_leaf(lab_cluster: Lab) -> None:
    # n[1-4] in Slurm's node-list order alternates the two leaves: n1 la, n2 lb, n3 la, n4 lb.
    job = lab_cluster.submit("-N4", "-w", "n[1-4]", "--comment=firsthop:tp=4,dp=2,pp=2")
    info = lab_cluster.wait_done(job)
    assert info["JobState"] == "COMPLETED", info
    rows = lab_cluster.output(job)
    tasks = _by_node(rows, "TASK")
    rank_of = {key: int(t["RANK"]) for key, t in tasks.items()}
    procid_of = {key: int(t["SLURM_PROCID"]) for key, t in tasks.items()}
    assert rank_of != procid_of  # firsthop renumbered Slurm's tasks
    assert sorted(rank_of.values()) == list(range(16))
    node_of_rank = {rank: node for (node, _), rank in rank_of.items()}
    # Megatron order tp-cp-ep-dp-pp: DP groups are {r, r+4} inside each block of 8 ranks.
    for rank in range(16):
        if rank % 8 < 4:
            assert leaf_of(node_of_rank[rank]) == leaf_of(node_of_rank[rank + 4])
    # In Slurm's own order the same DP pairs would cross the leaves.
    slurm_node = {procid: node for (node, _), procid in procid_of.items()}
    assert leaf_of(slurm_node[0]) != leaf_of(slurm_node[4])
    # One task per node (torchrun style): node ranks follow firsthop's order.
    per_node = {r["SLURMD_NODENAME"]: r for r in rows if r["kind"] == "NODE"}
    for node, row in per_node.items():
        first = min(rank for (n, _), rank in rank_of.items() if n == node)
        assert int(row["FIRSTHOP_NODE_RANK"]) == first // GPUS
    published = [line for line in lab_cluster.log_lines(job) if "action=publish" in line]
    assert len(published) == 1
    costs = dict(re.findall(r"(\w+_cost_ms|cost_ms)=([\d.]+)", published[0]))
    assert float(costs["cost_ms"]) < float(costs["slurm_order_cost_ms"])


def test_job_without_comment_is_untouched(lab_cluster: Lab) -> None:
    job = lab_cluster.submit("-N2")
    info = lab_cluster.wait_done(job)
    assert info["JobState"] == "COMPLETED", info
    for task in lab_cluster.output(job):
        assert task["RANK"] == "none"
        assert task["FIRSTHOP_NODE_RANK"] == "none"
    assert not (lab_cluster.state / "jobs" / job).exists()
    assert lab_cluster.log_lines(job) == []


def test_bad_shape_fails_prolog_ctld_and_slurm_requeues(lab_cluster: Lab) -> None:
    job = lab_cluster.submit("-N1", "--comment=firsthop:tp=2,dp=3")
    try:
        lab_cluster.wait_for(
            "the requeue",
            lambda: int(lab_cluster.job(job).get("Restarts", "0")) >= 1,
            timeout_s=30,
        )
        lines = lab_cluster.log_lines(job)
        assert any("prolog-ctld" in x and "action=reject reason=shape_mismatch" in x for x in lines)
        # Slurm keeps no PrologSlurmctld output; the reason is in the job's AdminComment.
        shown = lab_cluster.cluster.run(["scontrol", "show", "job", "-o", job])
        assert "AdminComment=firsthop: shape_mismatch: tp*cp*ep*dp*pp = 6 GPUs" in shown
        # Requeued, never run: the job is completing its failed start or pending again.
        assert lab_cluster.job(job)["JobState"] in {"PENDING", "REQUEUED", "COMPLETING"}
        assert not (lab_cluster.state / "jobs" / job).exists()
    finally:
        lab_cluster.cluster.run(["scancel", job], check=False)


def test_ecc_node_is_drained_and_the_job_runs_elsewhere(lab_cluster: Lab) -> None:
    # An idle cluster, so the nodes Slurm would pick now are the nodes it picks next.
    lab_cluster.cluster.wait_idle(lab_cluster.cluster.nodes)
    chosen = lab_cluster.cluster.would_allocate(2, f"--gres=gpu:{GPUS}")
    assert chosen is not None
    bad = chosen[0]
    lab_cluster.fake_probe(bad, "1:ecc:0:0:1")
    try:
        started = time.monotonic()
        job = lab_cluster.submit("-N2", "--comment=firsthop:tp=4,dp=2")
        info = lab_cluster.wait_done(job)
        elapsed = time.monotonic() - started
        assert info["JobState"] == "COMPLETED", info
        assert int(info["Restarts"]) == 1
        nodes = expand_hostlist(info["NodeList"])
        assert bad not in nodes
        node_info = lab_cluster.cluster.run(["scontrol", "show", "node", "-o", bad])
        assert re.search(r"State=\S*DRAIN", node_info), node_info
        assert "Reason=firsthop: ecc_uncorrectable: GPU 0" in node_info
        assert any(
            f"node={bad} action=drained health=FAILED ecc_uncorrectable" in line
            for line in lab_cluster.log_lines(job)
        )
        tasks = _by_node(lab_cluster.output(job), "TASK")
        assert {int(t["RANK"]) for t in tasks.values()} == set(range(8))
        assert elapsed < JOB_TIMEOUT_S
    finally:
        lab_cluster.fake_probe(bad)
        lab_cluster.cluster.run(["scontrol", "update", f"nodename={bad}", "state=resume"])


def test_status_reads_the_slurm_cluster(lab_cluster: Lab) -> None:
    ctl = Path(sys.executable).with_name("firsthopctl")
    done = subprocess.run(
        [
            str(ctl),
            "slurm",
            "status",
            "--topology",
            str(lab_cluster.etc / "topology.yaml"),
            "--slurm-conf",
            str(lab_cluster.cluster.conf),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["nodes"] == 6
    assert data["gpus_total"] == 24
    assert data["unknown_nodes"] == 0
    leaves = {d["domain"]: d for d in data["domains"] if d["tier"] == "leaf"}
    assert set(leaves) == {"la", "lb"}
    assert sum(d["free_gpus"] for d in leaves.values()) == data["gpus_free"]


def test_epilog_drains_a_node_whose_gpu_broke_during_the_job(lab_cluster: Lab) -> None:
    lab_cluster.fake_probe("n6", "2:remap-pending:1")  # poll 2 is the Epilog's check
    try:
        job = lab_cluster.submit("-N1", "-w", "n6", "--comment=firsthop:tp=4")
        info = lab_cluster.wait_done(job)
        assert info["JobState"] == "COMPLETED", info
        assert int(info["Restarts"]) == 0

        def drained() -> bool:
            shown = lab_cluster.cluster.run(["scontrol", "show", "node", "-o", "n6"])
            return f"Reason=firsthop: after job {job}: row_remap_pending" in shown

        lab_cluster.wait_for("the Epilog's drain", drained)
    finally:
        lab_cluster.fake_probe("n6")
        lab_cluster.cluster.run(["scontrol", "update", "nodename=n6", "state=resume"])


def _start_scheduler(topology: Path, log: TextIO) -> tuple[subprocess.Popen[str], str]:
    """A real ``firsthop-scheduler`` on a free port; returns it and its address."""
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("firsthop-scheduler")),
            "--listen",
            "127.0.0.1:0",
            "--db",
            "memory://",
            "--topology",
            str(topology),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if line.startswith("listening on "):
            return proc, line.split()[-1]
    _stop(proc)
    pytest.fail("firsthop-scheduler did not start (see its log in the test's directory)")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_server_mode_keeps_tables_in_the_scheduler(lab_cluster: Lab) -> None:
    config_file = lab_cluster.etc / "firsthop-slurm.json"
    saved = config_file.read_text()
    with (lab_cluster.root / "scheduler.log").open("w") as log:
        proc, address = _start_scheduler(lab_cluster.etc / "topology.yaml", log)
        try:
            _run_in_server_mode(lab_cluster, config_file, saved, address)
        finally:
            config_file.write_text(saved)
            _stop(proc)


def _run_in_server_mode(lab_cluster: Lab, config_file: Path, saved: str, address: str) -> None:
    # What `firsthopctl slurm install --server ADDR` writes; hooks read it on every run.
    config_file.write_text(json.dumps({**json.loads(saved), "server": address}))
    job = lab_cluster.submit("-N2", "--comment=firsthop:tp=2,dp=4")
    info = lab_cluster.wait_done(job)
    assert info["JobState"] == "COMPLETED", info
    expected = expected_ranks(lab(), expand_hostlist(info["NodeList"]), tp=2, dp=4)
    tasks = _by_node(lab_cluster.output(job), "TASK")
    assert {int(t["RANK"]): key for key, t in tasks.items()} == expected
    lines = lab_cluster.log_lines(job)
    assert any("action=publish" in x and f"to=firsthop://{address}" in x for x in lines)
    assert not (lab_cluster.state / "jobs" / job).exists()
    lab_cluster.wait_for(
        "EpilogSlurmctld's delete",
        lambda: any(
            "epilog-ctld" in x and "action=remove_table" in x for x in lab_cluster.log_lines(job)
        ),
    )
