"""Repair in place with spares against repair through the queue, on the same failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sim_builders import DAY, index, job
from typer.testing import CliRunner

from scheduler.core.states import JobState
from scheduler.sim.cli import app
from scheduler.sim.config import SimConfig
from scheduler.sim.engine import Outcome, spare_hosts
from scheduler.sim.failures import FailureEvent, FailureKind
from scheduler.sim.metrics import SHARES, policy_metrics
from scheduler.sim.policies import parse_policies, split_policy
from scheduler.sim.simulate import Study, run_policy, simulate
from topology.errors import InvalidInputError
from topology.index import TopologyIndex

CONFIG = SimConfig(spares_per_leaf=1, large_job_gpus=128)


def _cluster() -> tuple[TopologyIndex, list[str]]:
    """2 pods x 2 leaves x 5 hosts: 16 hosts for a 128-GPU job, one spare per leaf."""
    idx = index(2, 2, 5)
    return idx, list(spare_hosts(idx, 1))


def _failures(idx: TopologyIndex, spares: list[str]) -> list[FailureEvent]:
    """A GPU fault on a host of the big job, later a software fault on another one."""
    workers = [h for h in idx.host_names if h not in spares]
    gpu = idx.host_ids[workers[1]]
    soft = idx.host_ids[workers[6]]
    return [
        FailureEvent(3600.0, FailureKind.HARDWARE, (gpu,), 4 * 3600.0, "gpu"),
        FailureEvent(6 * 3600.0, FailureKind.SOFTWARE, (soft,), 0.0, "software"),
    ]


def _both(days: float = 0.5) -> dict[str, Outcome]:
    idx, spares = _cluster()
    study = Study(
        idx,
        "small",
        "hero=128",
        ("firsthop:in-place", "firsthop:queue"),
        "none",
        days,
        config=CONFIG,
    )
    big = job("big", 0.0, 128, 10 * DAY)
    fails = _failures(idx, spares)
    return {
        label: run_policy(study, label, jobs=[big], failures=fails, rate=1e-6)
        for label in study.policies
    }


def test_spares_are_the_last_host_of_every_leaf() -> None:
    idx, spares = _cluster()
    assert spares == ["h0005", "h0010", "h0015", "h0020"]
    assert spare_hosts(idx, 0) == ()
    assert len(spare_hosts(index(1, 2, 3), 3)) == 0  # a leaf is never all spares


def test_in_place_repairs_without_the_queue_and_the_queue_run_requeues() -> None:
    out = _both()
    in_place, queue = out["firsthop:in-place"], out["firsthop:queue"]
    assert in_place.repair == "in-place"
    assert queue.repair == "queue"
    assert len(in_place.spares) == 4
    assert queue.spares == ()
    m_in = policy_metrics(in_place, 128, 120.0)
    m_q = policy_metrics(queue, 128, 120.0)
    # Both failures hit the job in both runs.
    for record in (in_place.jobs["big"], queue.jobs["big"]):
        assert [f.reason for f in record.failures] == ["node_failed", "rank_exited"]
        assert record.state is JobState.RUNNING
    assert (m_in["repairs_in_place"], m_in["repairs_through_queue"]) == (2, 0)
    assert (m_q["repairs_in_place"], m_q["repairs_through_queue"]) == (0, 2)
    repairs = in_place.jobs["big"].repairs
    assert [r.method for r in repairs] == ["partial", "unchanged"]
    # The GPU fault's ranks went to a spare (the only free hosts: the job holds the rest).
    ((_old, new),) = repairs[0].moves
    assert new in in_place.spares
    # Back in service after its repair, the failed host is no longer excluded.
    assert in_place.jobs["big"].excluded_hosts == frozenset()
    assert queue.jobs["big"].excluded_hosts == frozenset()
    # In place skips the wait for a scheduling cycle: less time off, a higher ETTR.
    g_in, g_q = m_in["goodput"]["big"], m_q["goodput"]["big"]
    assert g_in["queued_s"] == 0.0 < g_q["queued_s"]
    assert m_in["ettr"]["big"] > m_q["ettr"]["big"]
    assert g_in["ettr_work"] > g_q["ettr_work"]
    for g in (g_in, g_q):
        assert sum(g["share"][k] for k in SHARES) == pytest.approx(1.0, abs=1e-4)
        assert g["checkpoints"] > 0
        assert g["lost_s"] > 0
        assert 0 <= g["slowdown_s"] < g["useful_s"]


def test_a_repaired_host_takes_the_place_of_the_spare_a_repair_consumed() -> None:
    idx, spares = _cluster()
    in_place = _both()["firsthop:in-place"]
    failed = idx.host_names[_failures(idx, spares)[0].hosts[0]]
    ((_, used),) = in_place.jobs["big"].repairs[0].moves
    # The engine's core state at the end: the pool kept its size, the returned host is in it
    # and the spare the job now runs on left it.
    assert in_place.repairs == 1
    assert failed in in_place.spares_at_end
    assert used not in in_place.spares_at_end
    assert len(in_place.spares_at_end) == 4


def test_the_study_report_has_both_modes_side_by_side() -> None:
    idx, _ = _cluster()
    study = Study(
        idx,
        "small",
        "hero=128",
        ("firsthop:in-place", "firsthop:queue"),
        "llama3",
        0.3,
        seed=2,
        config=CONFIG.model_copy(
            update={"failures": CONFIG.failures.model_copy(update={"scale": 100.0})}
        ),
    )
    first, _ = simulate(study)
    second, _ = simulate(study)
    for report in (first, second):
        del report["wall_s"], report["cpu_s"]
    assert first == second
    assert first["reference"] == "firsthop:in-place"
    assert set(first["ratios"]) == {"firsthop:queue"}
    policies = first["policies"]
    assert policies["firsthop:in-place"]["repair"] == "in-place"
    assert policies["firsthop:queue"]["repairs_in_place"] == 0
    assert policies["firsthop:in-place"]["spares"] == 4
    assert "big" not in policies["firsthop:queue"]["goodput"]
    assert set(policies["firsthop:queue"]["goodput"]) == {"hero"}


def test_policy_labels() -> None:
    assert split_policy("firsthop") == ("firsthop", "queue")
    assert split_policy("firsthop:in-place") == ("firsthop", "in-place")
    assert split_policy("slurm-tree:queue") == ("slurm-tree", "queue")
    with pytest.raises(InvalidInputError) as bad_mode:
        parse_policies("firsthop,firsthop:sometimes")
    assert bad_mode.value.reason == "unknown_repair"
    with pytest.raises(InvalidInputError) as bad_name:
        split_policy("nope:in-place")
    assert bad_name.value.reason == "unknown_policy"


def test_cli_compares_repair_modes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "run",
        "--topology",
        "fat-tree:pods=2,leaves-per-pod=2,hosts-per-leaf=5,oversubscription=4",
        "--workload",
        "hero=128",
        "--failures",
        "llama3",
        "--days",
        "0.3",
        "--seed",
        "2",
        "--spares-per-leaf",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"large_job_gpus": 128, "failures": {"scale": 100.0, "gpu_repair_h": 1.0}})
    )
    result = CliRunner().invoke(
        app, [*args, "--config", str(config), "--policy", "firsthop:in-place,firsthop:queue"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    in_place, queue = report["policies"]["firsthop:in-place"], report["policies"]["firsthop:queue"]
    assert in_place["spares"] == 4
    assert queue["spares"] == 0
    assert in_place["repairs_in_place"] > 0
    assert queue["repairs_in_place"] == 0
    assert queue["repairs_through_queue"] > 0
    assert set(in_place["goodput"]) == {"hero"}
    text = (out / "report.md").read_text()
    assert "| repairs_in_place |" in text
    assert "Where a large job's time went" in text
    bad = CliRunner().invoke(app, [*args, "--policy", "firsthop:later"])
    assert bad.exit_code == 2
    assert "unknown_repair" in bad.output
