"""Restart time and memory of the scheduler against the length of its history.

For each history length (0, 100,000 and 1,000,000 finished jobs, all finished more than the
retention window ago, plus 1,000 pending jobs) a SQLite store is filled directly (bulk inserts
of rows as the store writes them), then ``firsthop-scheduler`` is started on it with the
4,096-host fat tree of ``bench.control_plane`` and timed from ``exec`` to its ``listening on``
line (imports, store open, load, core rebuild, bind), and its resident memory is read from
``/proc`` once it listens (``VmRSS``, and the peak ``VmHWM``).

Baseline, in the same run: the 100,000-job store with a retention longer than the history, so
every job is loaded as before this change (the 1,000,000-job baseline would need ~5.5 GB).
Run: ``python -m bench.restart`` (``--quick`` for 0 and 100,000 jobs); writes
``bench/results/restart.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.control_plane import _specs
from bench.harness.procs import Proc, scheduler_argv
from scheduler.core.records import Job
from scheduler.core.states import JobState
from scheduler.store import schema
from scheduler.store.serde import job_to_row
from scheduler.store.sql import SqlStore
from topology.generators import fat_tree
from topology.spec import dump_spec

LIVE_JOBS = 1_000
CHUNK = 20_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _fill(url: str, finished: int) -> float:
    """``finished`` old finished jobs and ``LIVE_JOBS`` pending ones; seconds it took."""
    started = time.perf_counter()
    store = SqlStore(url)
    specs = _specs(64)
    try:
        with store.engine.begin() as conn:
            for first in range(0, finished + LIVE_JOBS, CHUNK):
                rows = []
                for i in range(first, min(first + CHUNK, finished + LIVE_JOBS)):
                    at = T0 + timedelta(seconds=i)
                    live = i >= finished
                    job = Job(
                        id=f"j-{i:012x}",
                        spec=specs[i % len(specs)],
                        user=f"user{i % 97}",
                        state=JobState.PENDING if live else JobState.SUCCEEDED,
                        submitted_at=at,
                        updated_at=at,
                        submission_id=f"s-{i}",
                        version=1 if live else 7,
                    )
                    if not live:
                        job = replace(job, started_at=at, finished_at=at + timedelta(hours=1))
                    rows.append(job_to_row(job))
                conn.execute(schema.jobs.insert(), rows)
    finally:
        store.close()
    return time.perf_counter() - started


def _rss(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def _start(db: Path, topology: Path, work: Path, retention_s: float | None) -> dict[str, Any]:
    argv = scheduler_argv(f"sqlite:///{db}", topology)
    env_before = os.environ.get("FIRSTHOP_JOB_RETENTION_S")
    if retention_s is not None:
        os.environ["FIRSTHOP_JOB_RETENTION_S"] = str(retention_s)
    try:
        started = time.perf_counter()
        proc = Proc(argv, work / f"{db.stem}-{retention_s}.log")
        proc.wait_line("listening on ")
        took = time.perf_counter() - started
    finally:
        if env_before is None:
            os.environ.pop("FIRSTHOP_JOB_RETENTION_S", None)
        else:
            os.environ["FIRSTHOP_JOB_RETENTION_S"] = env_before
    memory = _rss(proc.popen.pid)
    proc.stop()
    return {"restart_s": round(took, 2), "rss_mb": memory["VmRSS"], "peak_rss_mb": memory["VmHWM"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0 and 100,000 jobs only")
    args = parser.parse_args()
    sizes = (0, 100_000) if args.quick else (0, 100_000, 1_000_000)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="firsthop-restart-") as tmp:
        work = Path(tmp)
        topology = work / "cluster.yaml"
        dump_spec(fat_tree(16, 16, 16, gpus_per_host=8), topology)
        for finished in sizes:
            db = work / f"history-{finished}.db"
            fill_s = _fill(f"sqlite:///{db}", finished)
            row: dict[str, Any] = {
                "finished_jobs_in_store": finished,
                "live_jobs": LIVE_JOBS,
                "store_mb": round(db.stat().st_size / 2**20, 1),
                "fill_s": round(fill_s, 1),
                **_start(db, topology, work, None),
            }
            if finished == 100_000:
                row["baseline_everything_loaded"] = _start(db, topology, work, 3e8)
            results.append(row)
            print(row, flush=True)
    path = write_results("restart" + ("_quick" if args.quick else ""), {"results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
