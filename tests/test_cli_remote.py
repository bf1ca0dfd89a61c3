"""The CLIs through the real server: ``firsthop`` and the live ``firsthopctl`` groups.

One server with simulated agents for 4 hosts runs in a thread (its own event loop) for the
module; commands run through Typer's runner with ``--server``. Waits follow ``WatchJob``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from server_builders import running_agents, running_server, small_topology
from typer.testing import CliRunner, Result

from scheduler.cli.ctl import app as ctl_app
from scheduler.cli.user import EXIT_JOB_DID_NOT_SUCCEED
from scheduler.cli.user import app as user_app
from scheduler.client import FirsthopClient, JobState

runner = CliRunner()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        topology = small_topology()
        async with running_server(topology) as live, running_agents(live, topology, hosts=4):
            box["address"] = live.address
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(60), "the server did not start"
    yield str(box["address"])
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(60)


def _user(server: str, *args: str) -> Result:
    return runner.invoke(user_app, [*args, "--server", server])


def _ctl(server: str, *args: str) -> Result:
    return runner.invoke(ctl_app, [*args, "--server", server])


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def _job_file(tmp_path: Path, name: str, gpus: int, duration: float, **extra: Any) -> Path:
    path = tmp_path / f"{name}.json"
    data = {
        "name": name,
        "gpus": gpus,
        "command": ["train"],
        "env": {"FIRSTHOP_SIM_DURATION_S": str(duration)},
        **extra,
    }
    path.write_text(json.dumps(data))
    return path


def _wait_state(server: str, job_id: str, state: JobState) -> None:
    with FirsthopClient(server) as client:
        for job in client.watch_job(job_id):
            if job.state is state:
                return
    raise AssertionError(f"{job_id} never reached {state}")


def test_submit_prints_the_id_last_and_status_json_shows_the_placement(
    server: str, tmp_path: Path
) -> None:
    out = _ok(_user(server, "submit", str(_job_file(tmp_path, "long", 16, 600))))
    job_id = out.split()[-1]
    _wait_state(server, job_id, JobState.RUNNING)

    status = json.loads(_ok(_user(server, "status", job_id, "--output", "json")))
    table = _ok(_user(server, "status", job_id))
    _ok(_user(server, "cancel", job_id, "--reason", "done testing"))
    after = json.loads(_ok(_user(server, "status", job_id, "-o", "json")))

    assert out.startswith("submitted long (16 GPUs, queue default): j-")
    assert status["id"] == job_id
    assert status["state"] == "RUNNING"
    assert len(status["placement"]["hosts"]) == 2
    assert [r["rank"] for r in status["placement"]["ranks"]] == list(range(16))
    assert {"rank", "host", "gpu"} == set(status["placement"]["ranks"][0])
    assert "ranks 0-7 of 16" in table
    assert after["state"] == "CANCELLED"
    assert after["message"] == "done testing"
    assert after["placement"] is None


def test_watch_follows_a_job_to_its_end(server: str, tmp_path: Path) -> None:
    job_id = _ok(_user(server, "submit", str(_job_file(tmp_path, "short", 8, 0.2)))).split()[-1]

    lines = _ok(_user(server, "watch", job_id, "--output", "json")).splitlines()
    states = [json.loads(line)["state"] for line in lines]
    listing = json.loads(_ok(_user(server, "list", "-o", "json", "--state", "succeeded")))

    assert states[-1] == "SUCCEEDED"
    assert "RUNNING" in states
    assert job_id in [j["id"] for j in listing]
    assert all(j["state"] == "SUCCEEDED" for j in listing)


def test_watch_exits_non_zero_for_a_job_that_did_not_succeed(server: str, tmp_path: Path) -> None:
    env = {"FIRSTHOP_SIM_DURATION_S": "0.1", "FIRSTHOP_SIM_EXIT_CODE": "3"}
    path = _job_file(tmp_path, "fails", 8, 0.1, env=env)
    job_id = _ok(_user(server, "submit", str(path))).split()[-1]

    result = _user(server, "watch", job_id)

    assert result.exit_code == EXIT_JOB_DID_NOT_SUCCEED
    assert "FAILED" in result.stdout


def test_explain_a_job_that_cannot_fit_now(server: str, tmp_path: Path) -> None:
    job_id = _ok(_user(server, "submit", str(_job_file(tmp_path, "wide", 64, 1)))).split()[-1]

    explained = json.loads(_ok(_user(server, "explain", job_id, "-o", "json")))
    text = _ok(_user(server, "explain", job_id))
    _ok(_user(server, "cancel", job_id))

    assert explained["state"] == "PENDING"
    assert explained["reason"] in {"insufficient_gpus", "insufficient_free_hosts"}
    assert explained["queue_position"] >= 1
    assert f"{job_id} is PENDING" in text


def test_operators_commands(server: str) -> None:
    nodes = json.loads(_ok(_ctl(server, "nodes", "list", "-o", "json")))
    drained = _ok(_ctl(server, "nodes", "drain", "h0004", "--reason", "bios update"))
    shown = json.loads(_ok(_ctl(server, "nodes", "show", "h0004", "-o", "json")))
    resumed = _ok(_ctl(server, "nodes", "resume", "h0004"))
    queue = _ok(_ctl(server, "queues", "set", "research", "--priority", "3", "--gpu-quota", "32"))
    queues = json.loads(_ok(_ctl(server, "queues", "list", "-o", "json")))
    status = json.loads(_ok(_ctl(server, "cluster", "status", "-o", "json")))
    status_table = _ok(_ctl(server, "cluster", "status"))
    jobs = json.loads(_ok(_ctl(server, "jobs", "list", "-o", "json")))
    topology = json.loads(_ok(_ctl(server, "topology", "show", "-o", "json")))

    assert len(nodes) == 16
    assert sum(n["state"] == "READY" for n in nodes) == 4
    assert drained.strip() == "h0004: DRAINED (bios update)"
    assert shown["state"] == "DRAINED"
    assert shown["location"] == ["pod00-leaf00", "pod00"]
    first, check = resumed.splitlines()
    assert first == "h0004: READY"
    assert check.startswith("deep health check passed in ")
    assert check.endswith(" s: simulated host: no hardware to check")
    assert queue.strip() == "queue research: priority 3, weight 1, quota 32 GPUs"
    assert {q["name"]: q["gpu_quota"] for q in queues} == {"default": None, "research": 32}
    assert status["hosts_total"] == 16
    assert [t["tier"] for t in status["tiers"]] == ["host", "leaf", "pod", "cluster"]
    assert set(status["fits"]) == {"8", "64", "512"}
    assert "fragmentation per tier" in status_table
    assert isinstance(jobs, list)
    assert topology["hosts"] == 16


def test_errors_map_to_exit_codes_and_one_line(server: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngpus: 8\nbogus: 1\n")
    unknown = _user(server, "status", "j-missing")
    malformed = _user(server, "submit", str(bad))
    too_large = _user(server, "submit", str(_job_file(tmp_path, "huge", 4096, 1)))
    no_node = _ctl(server, "nodes", "drain", "nope", "--reason", "x")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
        unreachable = runner.invoke(user_app, ["list", "--server", dead])

    assert unknown.exit_code == 3
    assert unknown.stderr.strip() == "error: unknown_job: unknown job 'j-missing'"
    assert malformed.exit_code == 2
    assert malformed.stderr.startswith("error: invalid_job_spec: ")
    assert too_large.exit_code == 2
    assert too_large.stderr.startswith("error: job_too_large: ")
    assert no_node.exit_code == 3
    assert no_node.stderr.startswith("error: unknown_node: ")
    assert unreachable.exit_code == 4
    assert unreachable.stderr.startswith("error: server_unavailable: ")
    for result in (unknown, malformed, too_large, no_node, unreachable):
        assert "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_status_shows_restarts_failures_lost_time_and_ettr(server: str, tmp_path: Path) -> None:
    spec = _job_file(
        tmp_path,
        "crashy",
        8,
        0.2,
        max_restarts=1,
        env={"FIRSTHOP_SIM_DURATION_S": "0.2", "FIRSTHOP_SIM_EXIT_CODE": "3"},
    )
    job_id = _ok(_user(server, "submit", str(spec))).split()[-1]
    _wait_state(server, job_id, JobState.FAILED)

    status = json.loads(_ok(_user(server, "status", job_id, "-o", "json")))
    table = _ok(_user(server, "status", job_id))

    assert status["restarts"] == 1
    assert [f["reason"] for f in status["failures"]] == ["rank_exited", "rank_exited"]
    assert all(f["lost_s"] > 0 for f in status["failures"])
    assert status["lost_s"] == pytest.approx(sum(f["lost_s"] for f in status["failures"]))
    assert status["ettr"] == 0.0  # it never checkpointed: nothing it did was kept
    assert "rank_exited on" in table
    assert "ettr" in table


def test_job_json_shows_the_servers_figures() -> None:
    from datetime import UTC, datetime, timedelta

    from scheduler.cli.views import job_dict
    from scheduler.client import FailureView, JobView
    from scheduler.jobspec import job_spec_from_data

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = JobView(
        id="j-1",
        spec=job_spec_from_data({"name": "x", "gpus": 8}),
        user="u",
        state=JobState.RUNNING,
        reason="running",
        message="",
        submitted_at=t0,
        updated_at=t0,
        first_started_at=t0 + timedelta(seconds=10),
        productive_s=75.0,
        restarts=1,
        failures=(FailureView(t0 + timedelta(seconds=50), "node_lost", "h2", 15.0),),
        lost_s=15.0,
        ettr=0.75,
        hosts_running=1,
    )

    data = job_dict(job)

    assert data["ettr"] == 0.75
    assert data["lost_s"] == 15.0
    assert data["hosts_running"] == 1
    assert data["failures"] == [
        {
            "at": "2026-01-01T00:00:50+00:00",
            "reason": "node_lost",
            "host": "h2",
            "lost_s": 15.0,
            "message": "",
            "checkpointed": False,
        }
    ]
    assert data["placement"] is None
    assert job_dict(replace(job, ettr=None))["ettr"] is None
