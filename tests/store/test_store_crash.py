"""A store written by a process killed with SIGKILL keeps every acknowledged change.

The writer (a child Python process) saves jobs one change set at a time and prints each job's
id only after ``save`` returned. The test reads those acknowledgements, kills the writer with
SIGKILL while it is still writing, reopens the database and checks every acknowledged job is
there in its acknowledged version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scheduler.store.sql import SqlStore

ACKED = 150

WRITER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from scheduler.core.actions import ChangeSet
    from scheduler.core.records import Job
    from scheduler.core.states import JobState
    from scheduler.jobspec import JobSpec
    from scheduler.store.sql import SqlStore

    store = SqlStore(sys.argv[1])
    spec = JobSpec(name="crash", gpus=8)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    i = 0
    while True:
        at = t0 + timedelta(seconds=i)
        job = Job(id=f"job{i:06d}", spec=spec, user="u", state=JobState.PENDING,
                  submitted_at=at, updated_at=at, submission_id=f"s{i}", version=1)
        store.save(ChangeSet(jobs=(job,)))
        if i % 2:  # every other job is also updated, to ack a second version
            done = replace(job, state=JobState.CANCELLED, finished_at=at, version=2)
            store.save(ChangeSet(jobs=(done,)))
            print(f"{job.id} 2", flush=True)
        else:
            print(f"{job.id} 1", flush=True)
        i += 1
    """
)


def _run_and_kill(url: str, tmp_path: Path) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    acked: dict[str, int] = {}
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            for line in proc.stdout:
                job_id, version = line.split()
                acked[job_id] = int(version)
                if len(acked) >= ACKED:
                    break
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        stderr = proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, stderr
    assert len(acked) == ACKED, stderr
    return acked


def _check(url: str, acked: dict[str, int]) -> None:
    store = SqlStore(url)
    try:
        stored = {j.id: j for j in store.load().jobs}
    finally:
        store.close()
    missing = sorted(j for j in acked if j not in stored)
    assert not missing, f"acknowledged jobs lost: {missing[:5]}"
    older = sorted(j for j, v in acked.items() if stored[j].version < v)
    assert not older, f"acknowledged versions lost: {older[:5]}"


def test_sqlite_keeps_acknowledged_writes_after_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    acked = _run_and_kill(url, tmp_path)
    _check(url, acked)


@pytest.mark.postgres
def test_postgres_keeps_acknowledged_writes_after_sigkill(
    postgres_url: str, tmp_path: Path
) -> None:
    acked = _run_and_kill(postgres_url, tmp_path)
    _check(postgres_url, acked)
