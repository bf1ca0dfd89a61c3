"""Failover benchmark: how long the scheduler is gone when the leader is SIGKILLed.

Real processes on this machine: two ``firsthop-scheduler`` processes on one throwaway
PostgreSQL (a leader and a standby, lease 5 s, standby poll 0.5 s), ``firsthop-agent
simulate`` for a 4-host cluster running a 16-GPU job for the whole run, and a client thread
submitting 8-GPU jobs with submission ids to the list of both schedulers. Each of ``--trials``
failovers SIGKILLs the leader and measures, from the signal:

- ``takeover_s``: until the standby prints ``leading with epoch N`` (lease taken, state
  loaded, serving);
- ``serving_s``: until a client given both addresses gets an answer (includes the client's
  backoff while it looks for the leader);

then starts the killed scheduler again as the standby. The baseline, measured in the same run
on the same database, is a lone scheduler restarted at once after SIGKILL (``cold_restart_s``:
process start-up, migrations check, state load), which is what a deployment without a standby
gets at best (a supervisor restarting it immediately). Checked at the end, as in the HA test:
every acknowledged submission exists exactly once, the long job never restarted.

Run: ``python -m bench.failover [--trials 20]``; writes ``bench/results/failover.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.harness.ha import HaCluster, Submitter
from bench.harness.postgres import start_throwaway_postgres
from bench.harness.procs import BIN, Proc
from scheduler.client import FirsthopClient, JobState
from scheduler.jobspec import job_spec_from_data
from topology.generators import fat_tree
from topology.spec import dump_spec

ENV = {
    "FIRSTHOP_HEARTBEAT_INTERVAL_S": "1",
    "FIRSTHOP_TICK_INTERVAL_S": "0.2",
    "FIRSTHOP_LEASE_S": "5",
    "FIRSTHOP_LEADER_POLL_S": "0.5",
}
COLD_RESTARTS = 5


def _spec(gpus: int, duration_s: float) -> Any:
    return job_spec_from_data(
        {
            "name": "bench",
            "gpus": gpus,
            "command": ["train"],
            "env": {"FIRSTHOP_SIM_DURATION_S": str(duration_s)},
        }
    )


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def run(trials: int) -> dict[str, Any]:
    """Measure ``trials`` failovers and the cold-restart baseline; the result payload."""
    pg = start_throwaway_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="firsthop-failover-") as tmp:
            work = Path(tmp)
            topology = work / "cluster.yaml"
            dump_spec(fat_tree(1, 2, 2, gpus_per_host=8), topology)

            lone = HaCluster(work, topology, pg.create_database("cold"), count=1, env=ENV)
            lone.start()
            try:
                cold = [lone.restart_cold() for _ in range(COLD_RESTARTS)]
            finally:
                lone.stop()

            ha = HaCluster(work, topology, pg.create_database("ha"), count=2, env=ENV)
            ha.start()
            argv = [str(BIN / "firsthop-agent"), "simulate", "--server", ha.servers]
            agents = Proc([*argv, "--topology", str(topology)], work / "agents.log")
            try:
                agents.wait_line("connected 4 agents")
                with FirsthopClient(ha.servers) as client:
                    long_job, _ = client.submit_job(_spec(16, 86_400), submission_id="long")
                    for view in client.watch_job(long_job.id):
                        if view.state is JobState.RUNNING:
                            break
                submitter = Submitter(ha.servers, lambda: _spec(8, 0.5))
                submitter.start()
                takeovers = []
                try:
                    for trial in range(trials):
                        takeover = ha.kill_leader()
                        takeovers.append(takeover)
                        print(
                            f"failover {trial + 1:2d}: takeover {takeover.takeover_s:5.2f} s, "
                            f"serving {takeover.serving_s:5.2f} s (epoch {takeover.epoch})",
                            flush=True,
                        )
                finally:
                    submitter.stop()
                with FirsthopClient(ha.servers) as client:
                    jobs = list(client.list_jobs())
                    long_view = client.get_job(long_job.id)
            finally:
                agents.stop()
                ha.stop()
    finally:
        pg.stop()

    by_submission: dict[str, list[str]] = {}
    for job in jobs:
        if job.submission_id is not None:
            by_submission.setdefault(job.submission_id, []).append(job.id)
    lost = [s for s in submitter.acknowledged if s not in by_submission]
    duplicated = [s for s, ids in by_submission.items() if len(ids) > 1]
    mismatched = [s for s, j in submitter.acknowledged.items() if by_submission.get(s, [j])[0] != j]
    takeover_s = [t.takeover_s for t in takeovers]
    serving_s = [t.serving_s for t in takeovers]
    return {
        "trials": trials,
        "settings": {"lease_s": 5.0, "leader_poll_s": 0.5, "schedulers": 2, "hosts": 4},
        "takeover_s": _summary(takeover_s),
        "serving_s": _summary(serving_s),
        "baseline_cold_restart_s": _summary(cold),
        "takeover_vs_cold_restart_median": statistics.median(takeover_s) / statistics.median(cold),
        "under_10_s": sum(t < 10.0 for t in takeover_s),
        "samples": {"takeover_s": takeover_s, "serving_s": serving_s, "cold_restart_s": cold},
        "submissions": {
            "acknowledged": len(submitter.acknowledged),
            "unacknowledged": len(submitter.failed),
            "answered_by_retry": len(submitter.repeated),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "mismatched": len(mismatched),
        },
        "long_job": {"state": long_view.state.value, "restarts": long_view.restarts},
        "jobs_restarted": sum(1 for j in jobs if j.restarts),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a summary, write ``bench/results/failover.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.failover")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    payload = run(args.trials)
    path = write_results("failover", payload)
    t, c, s = payload["takeover_s"], payload["baseline_cold_restart_s"], payload["submissions"]
    print(
        f"takeover   median {t['median']:.2f} s  p90 {t['p90']:.2f} s  max {t['max']:.2f} s\n"
        f"cold restart (baseline) median {c['median']:.2f} s  "
        f"ratio {payload['takeover_vs_cold_restart_median']:.2f}\n"
        f"submissions acknowledged {s['acknowledged']}  lost {s['lost']}  "
        f"duplicated {s['duplicated']}  long job {payload['long_job']}\n"
        f"wrote {path}"
    )
    ok = (
        s["lost"] == 0
        and s["duplicated"] == 0
        and s["mismatched"] == 0
        and payload["long_job"] == {"state": JobState.RUNNING.value, "restarts": 0}
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
