"""The submit-path benchmark on a real server process: every call of both phases is answered
and counted, the server's CPU is split by thread, an exported revision runs its own code, and
the summary compares the current code with that baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.submit_path import _summary, current_variant, export_rev, run_store


@pytest.mark.slow
@pytest.mark.e2e
def test_both_phases_answer_every_call_and_the_baseline_runs_its_own_tree(tmp_path: Path) -> None:
    args = argparse.Namespace(jobs=96, clients=2)
    baseline = export_rev("HEAD", tmp_path)
    assert (baseline.root / "scheduler" / "server.py").exists()
    results = [
        run_store("memory", "memory://", variant, args=args, work=tmp_path, tag=variant.name)
        for variant in (baseline, current_variant())
    ]
    for result in results:
        for phase in (result["submit"], result["grpc_health_check_floor"]):
            assert phase["calls"] == 96
            assert phase["errors"] == 0
            assert phase["calls_per_s"] > 0
            assert phase["latency_p50_ms"] <= phase["latency_p99_ms"]
            assert "event loop (main thread)" in phase["server_threads_cpu_us_per_call"]
    assert [r["variant"] for r in results] == ["baseline", "current"]
    summary = _summary(results)
    assert summary[-1].startswith("memory current/baseline: submit rate x")
