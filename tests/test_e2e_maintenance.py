"""Rolling maintenance with real processes: a scheduler (SQLite), three ``firsthop-agent run``
processes (``--fake-gpus 2``), real actions run by the agents, and ``firsthopctl maintenance``.

- A campaign over every host, one at a time, ``--busy wait``: the hosts of a running job wait
  for it to end (it is never stopped, and succeeds undisturbed); the scheduler is SIGKILLed while
  a host's action runs and restarted: the campaign finishes with every host's action run
  exactly once.
- A campaign whose action fails on two hosts with ``--max-failures 2`` pauses itself and leaves
  those hosts drained with the reason; ``resume`` after the fix goes on and succeeds.

Waits poll conditions with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.harness.local_cluster import LocalCluster, hosts, local_cluster
from bench.harness.procs import wait_until
from scheduler.cli.ctl import app as ctl_app
from scheduler.client import JobState, NodeState

pytestmark = pytest.mark.e2e

HOSTS = hosts(3)
CAMPAIGN_WAIT_S = 120.0
SERVER_ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": "0.3",
    "FIRSTHOP_HEARTBEAT_TIMEOUT_S": "3",
    "FIRSTHOP_TICK_INTERVAL_S": "0.1",
    "FIRSTHOP_STOP_GRACE_S": "3",
    "FIRSTHOP_FENCE_AFTER_S": "0",  # the scheduler is SIGKILLed and restarted mid-campaign
}
ACTION = (
    "import os, pathlib, sys, time\n"
    "root = pathlib.Path(sys.argv[1])\n"
    "host, campaign = os.environ['FIRSTHOP_HOST'], os.environ['FIRSTHOP_CAMPAIGN']\n"
    "with open(root / 'runs.log', 'a') as f:\n"
    "    f.write(f'{campaign} {host}\\n')\n"
    "print('upgrading', host, flush=True)\n"
    "if (root / f'bad-{host}').exists():\n"
    "    print('driver 999 does not load'); sys.exit(3)\n"
    "(root / f'started-{campaign}-{host}').touch()\n"
    "while not (root / 'go').exists() and time.sleep(0.05) is None:\n"
    "    if (root / 'fast').exists(): break\n"
)
WAIT_FOR_GO = (
    "import os, pathlib, sys, time\n"
    "d = pathlib.Path(sys.argv[1])\n"
    "while not (d / 'job-go').exists():\n"
    "    time.sleep(0.05)\n"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("maintenance")
    with local_cluster(root, len(HOSTS), env=SERVER_ENV, wait_s=CAMPAIGN_WAIT_S) as c:
        yield c


def _ctl(cluster: LocalCluster, *args: str) -> str:
    result = CliRunner().invoke(ctl_app, ["maintenance", *args, "--server", cluster.address])
    assert result.exit_code == 0, result.output
    return result.output


def _start(cluster: LocalCluster, name: str, *flags: str, argv: list[str]) -> None:
    result = CliRunner().invoke(
        ctl_app,
        ["maintenance", "start", name, "--server", cluster.address, *flags, "--", *argv],
    )
    assert result.exit_code == 0, result.output


def _status(cluster: LocalCluster, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_ctl(cluster, "status", name, "--output", "json"))
    return data


def _wait_state(cluster: LocalCluster, name: str, states: set[str]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        data = _status(cluster, name)
        return data if data["state"] in states else None

    return wait_until(reached, f"campaign {name} in {sorted(states)}", CAMPAIGN_WAIT_S)


def _runs(root: Path, name: str) -> Counter[str]:
    log = root / "runs.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines if line.split()[0] == name)


def test_a_campaign_waits_for_the_job_and_survives_a_sigkill(cluster: LocalCluster) -> None:
    root = cluster.root
    job_id = cluster.submit(
        {"name": "long", "gpus": 4, "command": [sys.executable, "-c", WAIT_FOR_GO, str(root)]},
    )
    running = cluster.wait_job(job_id, {JobState.RUNNING})
    assert running.placement is not None
    busy = set(running.placement.hosts)
    (idle,) = set(HOSTS) - busy

    _start(
        cluster,
        "drv",
        "--hosts",
        "all",
        "--max-unavailable",
        "1",
        "--busy",
        "wait",
        argv=[sys.executable, "-c", ACTION, str(root)],
    )
    # The idle host goes first and its action runs; the job's hosts wait.
    wait_until(lambda: (root / f"started-drv-{idle}").exists() or None, "idle host first")
    status = _status(cluster, "drv")
    states = {h["host"]: h["state"] for h in status["hosts"]}
    assert states[idle] == "IN_MAINTENANCE"
    assert {states[h] for h in busy} == {"WAITING"}

    # SIGKILL the scheduler while the idle host's action runs; restart it on the same address.
    address = cluster.address
    cluster.scheduler.stop(signal.SIGKILL)
    (root / "fast").touch()  # the action finishes while no scheduler listens
    cluster.start_scheduler(address)
    wait_until(
        lambda: (
            {h["host"]: h["state"] for h in _status(cluster, "drv")["hosts"]}[idle] == "DONE"
            or None
        ),
        "the idle host done after the restart",
    )
    # Its report was resent by the agent, not the action rerun.
    assert _runs(root, "drv") == Counter({idle: 1})

    # Next, one of the job's hosts drains and waits for the job (which is never stopped).
    status = wait_until(
        lambda: s if (s := _status(cluster, "drv"))["jobs_waited"] == 1 else None,
        "a busy host waiting for the job",
    )
    states = {h["host"]: h["state"] for h in status["hosts"]}
    assert sorted(states[h] for h in busy) == ["DRAINING", "WAITING"]
    assert status["job_ids_waited"] == [job_id]
    with cluster.client() as client:
        assert client.get_job(job_id).state is JobState.RUNNING
    (root / "job-go").touch()
    done = cluster.wait_job(job_id, {JobState.SUCCEEDED, JobState.FAILED})
    assert done.state is JobState.SUCCEEDED
    assert done.restarts == 0
    assert done.failures == ()

    final = _wait_state(cluster, "drv", {"SUCCEEDED", "FAILED", "PAUSED"})
    assert final["state"] == "SUCCEEDED", final
    assert _runs(root, "drv") == Counter(dict.fromkeys(HOSTS, 1))
    assert {h["state"] for h in final["hosts"]} == {"DONE"}
    assert final["gpu_hours_lost"] == 0.0
    with cluster.client() as client:
        assert {n.state for n in client.list_nodes()} == {NodeState.READY}


def test_max_failures_pauses_the_campaign_and_resume_goes_on(cluster: LocalCluster) -> None:
    root = cluster.root
    (root / "fast").touch()  # actions do not wait
    bad = HOSTS[:2]
    for host in bad:
        (root / f"bad-{host}").touch()
    _start(
        cluster,
        "bad-driver",
        "--hosts",
        ",".join(HOSTS),
        "--max-failures",
        "2",
        argv=[sys.executable, "-c", ACTION, str(root)],
    )
    paused = _wait_state(cluster, "bad-driver", {"PAUSED", "SUCCEEDED", "FAILED"})
    assert paused["state"] == "PAUSED"
    assert paused["reason"].startswith("max_failures: 2 hosts failed")
    hosts = {h["host"]: h for h in paused["hosts"]}
    for host in bad:
        assert hosts[host]["state"] == "FAILED"
        assert hosts[host]["reason"] == "action_failed: exit 3"
    assert hosts[HOSTS[2]]["state"] == "WAITING"  # the bad driver did not roll on
    with cluster.client() as client:
        for host in bad:
            node = client.get_node(host)
            assert node.state is NodeState.DRAINED
            assert "action_failed: exit 3" in node.reason

    for host in bad:
        (root / f"bad-{host}").unlink()
    _ctl(cluster, "resume", "bad-driver")
    final = _wait_state(cluster, "bad-driver", {"SUCCEEDED", "FAILED", "PAUSED"})
    assert final["state"] == "SUCCEEDED", final
    assert {h["host"]: h["attempts"] for h in final["hosts"]} == {
        HOSTS[0]: 2,
        HOSTS[1]: 2,
        HOSTS[2]: 1,
    }
    assert _runs(root, "bad-driver") == Counter({HOSTS[0]: 2, HOSTS[1]: 2, HOSTS[2]: 1})
    with cluster.client() as client:
        assert {n.state for n in client.list_nodes()} == {NodeState.READY}


def test_an_external_campaign_hands_hosts_over_and_takes_them_back(cluster: LocalCluster) -> None:
    result = CliRunner().invoke(
        ctl_app,
        [
            "maintenance",
            "start",
            "fw",
            "--hosts",
            HOSTS[2],
            "--external",
            "--server",
            cluster.address,
        ],
    )
    assert result.exit_code == 0, result.output
    ready = wait_until(
        lambda: (
            r
            if (r := json.loads(_ctl(cluster, "ready", "fw", "--output", "json")))["hosts"]
            else None
        ),
        "a host handed over",
    )
    assert ready == {"name": "fw", "hosts": [HOSTS[2]]}
    with cluster.client() as client:
        assert client.get_node(HOSTS[2]).state is NodeState.DRAINED
    _ctl(cluster, "done", "fw", HOSTS[2])
    final = _wait_state(cluster, "fw", {"SUCCEEDED", "FAILED", "PAUSED"})
    assert final["state"] == "SUCCEEDED"
    assert [(h["host"], h["state"], h["attempts"]) for h in final["hosts"]] == [
        (HOSTS[2], "DONE", 1)
    ]
    with cluster.client() as client:
        assert client.get_node(HOSTS[2]).state is NodeState.READY


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["start", "m1", "--busy", "evict", "--", "true"], "invalid_campaign"),
        (["start", "m2", "--hosts", "nosuch", "--", "true"], "invalid_selector"),
        (["start", "m3", "--max-unavailable", "0", "--", "true"], "invalid_budget"),
        (["start", "m4", "--not-before", "soon", "--", "true"], "invalid_time"),
        (["start", "m5"], "invalid_campaign"),
        (["status", "nosuch"], "unknown_campaign"),
        (["done", "nosuch", HOSTS[0]], "unknown_campaign"),
    ],
)
def test_bad_maintenance_requests_fail_with_their_reason(
    cluster: LocalCluster, args: list[str], reason: str
) -> None:
    command, *rest = args
    result = CliRunner().invoke(
        ctl_app, ["maintenance", command, "--server", cluster.address, *rest]
    )
    assert result.exit_code != 0
    assert f"error: {reason}:" in result.output
    listed = json.loads(_ctl(cluster, "list", "--output", "json"))
    assert not {c["name"] for c in listed} & {"m1", "m2", "m3", "m4", "m5"}
