"""The simulator's engine: determinism, conservation, and that it runs the production core."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from sim_builders import DAY, engine, failures, index, job, mixed_jobs, run

import scheduler.core as core_pkg
import scheduler.sim as sim_pkg
from scheduler.core.events import Event
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import JobState, is_terminal
from scheduler.sim.config import SimConfig
from scheduler.sim.engine import Engine, sim_scheduler_config
from scheduler.sim.metrics import policy_metrics
from scheduler.sim.policies import POLICIES, REPAIR_IN_PLACE, placer_for, split_policy


class CheckedEngine(Engine):
    """Validates the core's invariants (no GPU held twice, indexes consistent) after every
    event, and that the busy mask never counts more GPUs than the cluster has."""

    checked = 0

    def feed(self, event: Event) -> None:
        super().feed(event)
        self.scheduler.state.validate()
        held = sum(self.scheduler.state.queue_usage.values())
        assert held <= self.index.num_gpus
        self.checked += 1


@pytest.mark.parametrize("policy", [*POLICIES, "firsthop:in-place"])
def test_conservation_every_event(policy: str) -> None:
    idx = index()
    jobs = mixed_jobs(40, seed=3)
    fails = failures(idx, 1.0, scale=400.0)
    assert fails, "the test needs failures"
    name, repair = split_policy(policy)
    eng = CheckedEngine(
        idx,
        jobs,
        fails,
        policy=policy,
        placer=placer_for(name),
        config=SimConfig(spares_per_leaf=1),
        horizon_s=DAY,
        failure_rate_per_host_s=0.0,
        repair_in_place=repair == REPAIR_IN_PLACE,
    )
    out = eng.run()
    assert eng.checked == out.events > 100
    # Every job is accounted for: submitted to the core or rejected, never lost.
    assert set(out.jobs) | set(out.rejected) == {j.id for j in jobs}
    states = {j.state for j in out.jobs.values()}
    assert JobState.SUCCEEDED in states
    requeued = [j for j in out.jobs.values() if j.failures]
    assert requeued, "failures at 400x the Llama 3 rate must interrupt some job"
    repaired = [r for j in out.jobs.values() for r in j.repairs if r.method != "queue"]
    assert bool(repaired) == (repair == REPAIR_IN_PLACE)
    for record in out.jobs.values():
        if record.state is JobState.SUCCEEDED:
            assert record.first_started_at is not None
            assert record.finished_at is not None
            assert record.finished_at >= record.first_started_at >= record.submitted_at


def test_same_seed_same_report() -> None:
    idx = index()
    jobs = mixed_jobs(30, seed=7)
    a = policy_metrics(run(idx, jobs, failures(idx, 1.0, 200.0, seed=5)), 16, 120.0)
    b = policy_metrics(run(idx, jobs, failures(idx, 1.0, 200.0, seed=5)), 16, 120.0)
    c = policy_metrics(run(idx, jobs, failures(idx, 1.0, 200.0, seed=6)), 16, 120.0)
    assert a == b
    assert a != c


def test_the_simulated_core_is_the_production_core() -> None:
    """The engine holds the production ``Scheduler`` and every decision is the core's:
    replaying the events the engine fed into a fresh production core gives the same jobs."""
    idx = index()
    jobs = mixed_jobs(25, seed=11)
    record: list[Event] = []
    eng = engine(idx, jobs, failures(idx, 1.0, 300.0, seed=2), record=record)
    assert type(eng.scheduler) is Scheduler
    assert type(eng.scheduler).handle is Scheduler.handle
    out = eng.run()
    fresh = Scheduler(
        idx, sim_scheduler_config(SimConfig(), eng.params), placer=placer_for("firsthop")
    )
    for event in record:
        fresh.handle(event)
    assert fresh.state.jobs == out.jobs
    assert any(is_terminal(j.state) for j in out.jobs.values())


def _defined_names(package_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in package_dir.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module-level functions and classes: where logic lives
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names.add(node.name)
    return names


def test_no_core_logic_is_copied_into_the_simulator() -> None:
    core = _defined_names(Path(inspect.getfile(core_pkg)).parent)
    sim = _defined_names(Path(inspect.getfile(sim_pkg)).parent)
    copied = core & sim
    assert copied == set(), f"simulator defines core names: {sorted(copied)}"
    for path in Path(inspect.getfile(sim_pkg)).parent.glob("*.py"):
        text = path.read_text()
        for internal in ("run_cycle(", "find_reservation(", "plan_preemption(", "interrupt("):
            assert internal not in text, f"{path.name} calls core internals ({internal})"


def test_hardware_failure_requeues_through_the_core_and_excludes_the_host() -> None:
    idx = index()
    big = job("big", 0.0, 16, 6 * 3600.0)
    out0 = run(idx, [big], [], days=0.5)
    first = out0.jobs["big"].last_allocation or out0.jobs["big"].allocation
    assert first is not None
    from scheduler.sim.failures import FailureEvent, FailureKind

    host = idx.host_ids[first.hosts[0]]
    fail = FailureEvent(3600.0, FailureKind.HARDWARE, (host,), 3600.0, "gpu")
    # Before the host's repair (at 2 h) the job avoids it; once it is back, no longer.
    during = run(idx, [big], [fail], days=1.5 / 24).jobs["big"]
    assert [f.reason for f in during.failures] == ["node_failed"]
    assert during.failures[0].lost_s > 0
    assert first.hosts[0] in during.excluded_hosts
    assert during.allocation is not None
    assert first.hosts[0] not in during.allocation.hosts
    out = run(idx, [big], [fail], days=0.5)
    record = out.jobs["big"]
    assert first.hosts[0] not in record.excluded_hosts
    assert record.state in (JobState.RUNNING, JobState.SUCCEEDED)
    assert out.repairs == 1


def test_software_failure_restarts_without_excluding() -> None:
    idx = index()
    one = job("one", 0.0, 8, 6 * 3600.0)
    from scheduler.sim.failures import FailureEvent, FailureKind

    probe = run(idx, [one], [], days=0.2)
    alloc = probe.jobs["one"].allocation or probe.jobs["one"].last_allocation
    assert alloc is not None
    host = idx.host_ids[alloc.hosts[0]]
    out = run(
        idx, [one], [FailureEvent(1800.0, FailureKind.SOFTWARE, (host,), 0.0, "software")], days=0.5
    )
    record = out.jobs["one"]
    assert [f.reason for f in record.failures] == ["rank_exited"]
    assert record.excluded_hosts == frozenset()


def test_checkpoints_bound_the_lost_work() -> None:
    idx = index()
    long = job("long", 0.0, 16, 2 * DAY, checkpoint={"dir": "/ckpt", "interval_s": 600})
    from dataclasses import replace

    from scheduler.sim.failures import FailureEvent, FailureKind

    given = replace(long, checkpoint_interval_s=600.0)
    probe = run(idx, [given], [], days=0.1)
    alloc = probe.jobs["long"].allocation
    assert alloc is not None
    host = idx.host_ids[alloc.hosts[0]]
    fail = FailureEvent(5 * 3600.0, FailureKind.HARDWARE, (host,), 3600.0, "gpu")
    out = run(idx, [given], [fail], days=0.5)
    lost = out.jobs["long"].failures[0].lost_s
    assert 0 < lost <= 600 + SimConfig().checkpoint.save_s


def test_same_seed_same_report_json() -> None:
    from scheduler.sim.simulate import Study, simulate

    idx = index()
    study = Study(idx, "small", "philly=0.9", ("firsthop", "kueue-tas"), "llama3", 0.3, seed=4)
    first, _ = simulate(study)
    second, _ = simulate(study)
    for report in (first, second):
        del report["wall_s"], report["cpu_s"]
    assert first == second
    assert first["policies"]["firsthop"]["jobs_submitted"] > 10
