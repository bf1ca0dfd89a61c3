"""Recovery benchmark: from a host's failure (SIGKILL) to all of its job's ranks running again.

Real processes on this machine: ``firsthop-scheduler`` (SQLite), three ``firsthop-agent run``
processes each pretending to be a host with two GPUs (``--fake-gpus 2``), and a four-rank job
on two of them. Each trial SIGKILLs the agent of one of the job's hosts and the process groups
of its ranks, then follows the job until it is RUNNING again on the remaining hosts, and
splits the time, as the scheduler stamped it:

- **detection**: SIGKILL to the failure the scheduler recorded (``failures[-1].at``);
- **re-placement**: failure to the new placement (``placement.placed_at``);
- **relaunch**: placement to every host reporting its ranks running (``started_at``).

Two kinds of job, because they are detected differently:

- ``gloo``: the example training job (``examples/train_ddp_checkpoint.py``, torch, gloo). The
  surviving ranks' collectives fail as soon as their peers die, they exit non-zero, and the
  scheduler reacts to that exit; also reported is when rank 0 of the new attempt printed that
  it resumed from the checkpoint (``training_resumed_s``: relaunch plus torch start-up).
- ``silent``: ranks that never talk to each other (sleepers). Nothing but the missing
  heartbeats reveals the failure, so detection is the heartbeat timeout.

The baseline, measured in the same run, is the heartbeat timeout itself (the time to merely
notice a silent host); the target is a total under heartbeat timeout + 5 s. After each trial
the killed host's agent is started again and an operator's resume (with the deep health
check, scripted to pass) returns it, so every trial starts from three healthy hosts.

At scale (``at_scale_in_place_vs_queue``, :func:`bench.repair.in_place_vs_queue`): the core
with simulated agents on 1,024 hosts at 80 % utilisation, a 512-host job loses one host; the
time from the failure to all ranks running again and the hosts and ranks that moved, repaired
in place vs through the queue.

Run: ``python -m bench.recovery [--trials N] [--skip-at-scale]``; writes
``bench/results/recovery.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.harness.local_cluster import TRAIN, LocalCluster, local_cluster
from bench.harness.procs import wait_until
from scheduler.client import FirsthopClient, JobState, JobView
from scheduler.jobspec import job_spec_from_data

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_TIMEOUT_S = 5.0
TARGET_MARGIN_S = 5.0
WAIT_S = 120.0
HOSTS = 3
SERVER_ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
    "FIRSTHOP_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
    "FIRSTHOP_TICK_INTERVAL_S": "0.1",
    "FIRSTHOP_STOP_GRACE_S": "2",
}


def _kill_host(cluster: LocalCluster, host: str) -> datetime:
    """SIGKILL ``host`` (its agent and its ranks); the time of the kill."""
    at = datetime.now(UTC)
    cluster.kill_host(host)
    return at


def _job(client: FirsthopClient, job_id: str) -> JobView:
    return client.get_job(job_id)


def _spec(kind: str, root: Path, trial: int) -> dict[str, Any]:
    if kind == "gloo":
        argv = [sys.executable, str(TRAIN), "--steps", "1000000", "--step-time", "0.05"]
        checkpoint = {"dir": str(root / f"ckpt-{trial}"), "interval_s": 1}
        return {"name": "gloo", "gpus": 4, "command": argv, "checkpoint": checkpoint}
    argv = [sys.executable, "-c", "import time; time.sleep(3600)"]
    return {"name": "silent", "gpus": 4, "command": argv}


def trial(cluster: LocalCluster, kind: str, number: int) -> dict[str, Any]:
    """One failure and recovery of a fresh job; the split of the time."""
    with FirsthopClient(cluster.address) as client:
        data = {**_spec(kind, cluster.root, number), "max_restarts": 3}
        job, _ = client.submit_job(job_spec_from_data(data))

        def ready() -> JobView | None:
            current = _job(client, job.id)
            if current.state is not JobState.RUNNING:
                return None
            return current if kind == "silent" or current.last_checkpoint_at else None

        running = wait_until(ready, f"{kind} job running", timeout=WAIT_S)
        assert running.placement is not None
        victim = running.placement.hosts[0]
        killed_at = _kill_host(cluster, victim)

        def recovered() -> JobView | None:
            current = _job(client, job.id)
            return current if current.state is JobState.RUNNING and current.restarts else None

        back = wait_until(recovered, f"{kind} job running again", timeout=WAIT_S)
        resumed_s = None
        if kind == "gloo":
            assert back.placement is not None
            log = cluster.log_dir(back.placement.hosts[0]) / job.id / "attempt-1" / "rank-0.log"

            def resumed() -> float | None:
                text = log.read_text() if log.exists() else ""
                if "starting at step" not in text:
                    return None
                return (datetime.now(UTC) - killed_at).total_seconds()

            resumed_s = wait_until(resumed, "training resumed", timeout=WAIT_S)
        client.cancel_job(job.id, "benchmark trial over")
        failure = back.failures[-1]
        assert back.placement is not None
        assert back.started_at is not None
        placed_at = back.placement.placed_at
        assert placed_at is not None
        result = {
            "kind": kind,
            "victim": victim,
            "failure_reason": failure.reason,
            "detection_s": (failure.at - killed_at).total_seconds(),
            "replacement_s": (placed_at - failure.at).total_seconds(),
            "relaunch_s": (back.started_at - placed_at).total_seconds(),
            "total_s": (back.started_at - killed_at).total_seconds(),
            "training_resumed_s": resumed_s,
        }
        restarted = datetime.now(UTC)
        cluster.start_agent(victim, wait=True)

        def attached() -> bool | None:
            # The scheduler has the new agent's stream once it handled its first message.
            node = client.get_node(victim)
            seen, registered = node.last_heartbeat_at, node.registered_at
            if seen is None or registered is None or registered < restarted:
                return None
            return True if seen > registered else None

        wait_until(attached, f"{victim}'s new agent attached", timeout=WAIT_S)
        started = time.monotonic()
        view, check = client.resume_node(victim, "benchmark: host restarted")
        result["resume_with_check_s"] = round(time.monotonic() - started, 3)
        assert view.state.value == "READY"
        assert check is not None
        assert check.passed
    return result


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("detection_s", "replacement_s", "relaunch_s", "total_s", "training_resumed_s")
    out: dict[str, Any] = {"trials": len(rows)}
    for key in keys:
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            out[key] = {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}
    out["failure_reasons"] = sorted({r["failure_reason"] for r in rows})
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the trials, print a table, write ``bench/results/recovery.json``."""
    parser = argparse.ArgumentParser(description="firsthop recovery benchmark")
    parser.add_argument("--trials", type=int, default=3, help="trials per kind of job")
    parser.add_argument("--work-dir", type=Path, help="keep logs here (default: a temp dir)")
    parser.add_argument(
        "--skip-at-scale",
        action="store_true",
        help="skip the 1,024-host in-place vs queue comparison (the core with simulated agents)",
    )
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="firsthop-recovery-") as tmp:
        root = args.work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        flags = ("--stop-grace", "2", "--max-backoff", "0.5")
        with local_cluster(
            root, HOSTS, env=SERVER_ENV, agent_flags=flags, wait_s=WAIT_S
        ) as cluster:
            for kind in ("gloo", "silent"):
                for number in range(args.trials):
                    rows.append(trial(cluster, kind, number))
    target = HEARTBEAT_TIMEOUT_S + TARGET_MARGIN_S
    summary = {
        kind: _summary([r for r in rows if r["kind"] == kind]) for kind in ("gloo", "silent")
    }
    worst = max(r["total_s"] for r in rows)
    payload = {
        "setup": {
            "hosts": HOSTS,
            "gpus_per_host": 2,
            "job_ranks": 4,
            "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
            "heartbeat_timeout_s": HEARTBEAT_TIMEOUT_S,
        },
        "baseline_heartbeat_timeout_s": HEARTBEAT_TIMEOUT_S,
        "target_total_s": target,
        "worst_total_s": round(worst, 3),
        "meets_target": worst < target,
        "summary": summary,
        "trials": rows,
    }
    if not args.skip_at_scale:
        from bench.repair import in_place_vs_queue

        at_scale = in_place_vs_queue()
        payload["at_scale_in_place_vs_queue"] = at_scale
        for how in ("queue", "in_place"):
            row = at_scale[how]
            print(
                f"1,024 hosts, 512-host job, {how:>8}: back in {row['failure_to_running_s']:.1f} s"
                f" simulated; hosts moved {row['hosts_moved']}, ranks moved {row['ranks_moved']}"
            )
    print(
        f"heartbeat timeout (baseline) {HEARTBEAT_TIMEOUT_S:.1f} s; target total < {target:.1f} s"
    )
    print(f"{'job':<7} {'detect':>8} {'re-place':>9} {'relaunch':>9} {'total':>8} {'resumed':>8}")
    for kind, s in summary.items():
        resumed = s.get("training_resumed_s", {}).get("median")
        print(
            f"{kind:<7} {s['detection_s']['median']:>7.2f}s {s['replacement_s']['median']:>8.2f}s"
            f" {s['relaunch_s']['median']:>8.2f}s {s['total_s']['median']:>7.2f}s"
            f" {'' if resumed is None else f'{resumed:.2f}s':>8}   (medians of {s['trials']};"
            f" detected by {', '.join(s['failure_reasons'])})"
        )
    print(f"worst total {worst:.2f} s: {'meets' if worst < target else 'MISSES'} the target")
    path = write_results("recovery", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
