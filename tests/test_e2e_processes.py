"""The real processes: ``firsthop-scheduler`` on a SQLite file and ``firsthop-agent simulate``.

- SIGKILL the scheduler right after it acknowledged a burst of submissions, restart it on the
  same database and port: every acknowledged job is back, the running job kept running on
  its agents (they reconnect and re-report), and scheduling continues to the end.
- SIGTERM stops it gracefully (exit 0); bad configuration exits 2 with one line.

Processes announce readiness on stdout (``listening on``, ``connected N agents``); tests wait
for those lines, never for a fixed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_builders import spec

from bench.harness.procs import BIN, WAIT_S, Proc
from scheduler.client import FirsthopClient, JobState, RemoteError
from topology.generators import fat_tree
from topology.spec import dump_spec

pytestmark = pytest.mark.e2e


@pytest.fixture
def topology_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    dump_spec(fat_tree(1, 2, 2, gpus_per_host=8), path)
    return path


def _scheduler(tmp_path: Path, topology: Path, listen: str, name: str) -> Proc:
    argv = [
        str(BIN / "firsthop-scheduler"),
        "--listen",
        listen,
        "--db",
        f"sqlite:///{tmp_path / 'firsthop.db'}",
        "--topology",
        str(topology),
        "--log-level",
        "WARNING",
    ]
    return Proc(argv, tmp_path / f"{name}.log")


def _agents(tmp_path: Path, topology: Path, address: str) -> Proc:
    argv = [
        str(BIN / "firsthop-agent"),
        "simulate",
        "--server",
        address,
        "--topology",
        str(topology),
    ]
    return Proc(argv, tmp_path / "agents.log")


@pytest.fixture
def env_fast_heartbeats() -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update({"FIRSTHOP_HEARTBEAT_INTERVAL_S": "0.5", "FIRSTHOP_TICK_INTERVAL_S": "0.1"})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _wait(client: FirsthopClient, job_id: str, states: set[JobState]) -> JobState:
    for job in client.watch_job(job_id):
        if job.state in states:
            return job.state
    return client.get_job(job_id).state


@pytest.mark.usefixtures("env_fast_heartbeats")
def test_sigkill_loses_no_acknowledged_job_and_scheduling_continues(
    tmp_path: Path, topology_file: Path
) -> None:
    first = _scheduler(tmp_path, topology_file, "127.0.0.1:0", "scheduler-1")
    address = first.wait_line("listening on ").split()[-1]
    agents = _agents(tmp_path, topology_file, address)
    agents.wait_line("connected 4 agents")
    acked: list[str] = []
    try:
        with FirsthopClient(address) as client:
            big, _ = client.submit_job(spec(32, 600, priority=5))
            assert _wait(client, big.id, {JobState.RUNNING}) is JobState.RUNNING
            for i in range(40):
                job, created = client.submit_job(spec(8, 0.2), submission_id=f"burst-{i}")
                assert created
                acked.append(job.id)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL

        second = _scheduler(tmp_path, topology_file, address, "scheduler-2")
        assert second.wait_line("listening on ").split()[-1] == address
        try:
            with FirsthopClient(address) as client:
                restored = {job_id: client.get_job(job_id).state for job_id in acked}
                # The agents reconnect, re-register and re-report the running ranks.
                big_state = client.get_job(big.id).state
                again, created = client.submit_job(spec(8, 0.2), submission_id="burst-0")
                client.cancel_job(big.id, "make room")
                finals = {job_id: _wait(client, job_id, {JobState.SUCCEEDED}) for job_id in acked}
        finally:
            assert second.stop() == 0
    finally:
        agents.stop()

    assert set(restored.values()) == {JobState.PENDING}
    assert big_state is JobState.RUNNING
    assert not created
    assert again.id == acked[0]
    assert set(finals.values()) == {JobState.SUCCEEDED}


def test_sigterm_stops_gracefully(tmp_path: Path, topology_file: Path) -> None:
    proc = _scheduler(tmp_path, topology_file, "127.0.0.1:0", "scheduler")
    address = proc.wait_line("listening on ").split()[-1]
    with FirsthopClient(address) as client:
        job, _ = client.submit_job(spec(8))

    assert proc.stop(signal.SIGTERM) == 0
    restarted = _scheduler(tmp_path, topology_file, "127.0.0.1:0", "scheduler-2")
    address = restarted.wait_line("listening on ").split()[-1]
    try:
        with FirsthopClient(address) as client:
            kept = client.get_job(job.id)
            with pytest.raises(RemoteError) as info:
                client.get_job("j-missing")
    finally:
        assert restarted.stop() == 0

    assert kept.state is JobState.PENDING
    assert info.value.reason == "unknown_job"


def test_bad_configuration_exits_2_with_one_line(tmp_path: Path) -> None:
    argv = [
        str(BIN / "firsthop-scheduler"),
        "--listen",
        "127.0.0.1:0",
        "--db",
        "memory://",
        "--topology",
        str(tmp_path / "missing.yaml"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, check=False)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unreadable_file: ")
    assert "Traceback" not in result.stderr
