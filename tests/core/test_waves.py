"""The maintenance wave planner: budgets, idle-first order, whole leaves, jobs kept together."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.waves import Budget, Fleet, parse_budget, parse_per_domain, plan_wave
from topology.errors import InvalidInputError


def _fleet(
    leaves: int,
    per_leaf: int,
    *,
    jobs: dict[str, frozenset[str]] | None = None,
    out: frozenset[str] = frozenset(),
    pods: int = 1,
) -> Fleet:
    domains = {}
    for leaf in range(leaves):
        for i in range(per_leaf):
            domains[f"l{leaf}h{i}"] = {"leaf": f"l{leaf}", "pod": f"p{leaf % pods}"}
    return Fleet(domains, out, jobs or {})


def test_budgets_parse_and_round_down_but_never_to_zero() -> None:
    assert parse_budget("5%") == Budget(5, percent=True)
    assert parse_budget(" 3 ") == Budget(3)
    assert Budget(5, percent=True).hosts(1024) == 51
    assert Budget(5, percent=True).hosts(10) == 1
    assert Budget(7).hosts(4) == 4
    assert parse_per_domain("leaf=1, pod=10%", ["leaf", "pod"]) == {
        "leaf": Budget(1),
        "pod": Budget(10, percent=True),
    }


@pytest.mark.parametrize("text", ["", "0", "-1", "101%", "five", "5%%", "1e3"])
def test_bad_budgets_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_budget(text)
    assert caught.value.reason == "invalid_budget"


def test_unknown_tiers_are_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_per_domain("rack=1", ["leaf", "pod"])
    assert caught.value.reason == "unknown_tier"


def test_a_whole_idle_leaf_goes_first_then_other_idle_hosts_then_busy_ones() -> None:
    busy = {"l0h0": frozenset({"j1"})}
    fleet = _fleet(3, 2, jobs=busy)
    waiting = list(fleet.domains)

    wave = plan_wave(waiting, fleet, max_unavailable=Budget(3))

    assert wave.hosts == ("l1h0", "l1h1", "l0h1")
    assert wave.waiting_for_budget == 3


def test_hosts_out_for_other_reasons_count_against_the_budget() -> None:
    fleet = _fleet(2, 2, out=frozenset({"l0h0"}))
    wave = plan_wave(["l0h1", "l1h0", "l1h1"], fleet, max_unavailable=Budget(2))
    assert len(wave.hosts) == 1


def test_the_per_domain_budget_spreads_a_wave_across_leaves() -> None:
    fleet = _fleet(3, 3)
    wave = plan_wave(
        list(fleet.domains), fleet, max_unavailable=Budget(5), per_domain={"leaf": Budget(1)}
    )
    leaves = [fleet.domains[h]["leaf"] for h in wave.hosts]
    assert sorted(leaves) == ["l0", "l1", "l2"]


def test_a_jobs_hosts_go_in_one_wave_and_a_bigger_unit_waits_for_room() -> None:
    jobs = {
        "l0h0": frozenset({"big"}),
        "l0h1": frozenset({"big"}),
        "l1h0": frozenset({"big"}),
        "l1h1": frozenset({"small"}),
    }
    fleet = _fleet(2, 2, jobs=jobs)
    waiting = list(fleet.domains)

    roomy = plan_wave(waiting, fleet, max_unavailable=Budget(4))
    tight = plan_wave(waiting, fleet, max_unavailable=Budget(3))
    crowded = plan_wave(
        waiting, _fleet(2, 2, jobs=jobs, out=frozenset({"x"})), max_unavailable=Budget(3)
    )

    assert roomy.hosts == ("l1h1", "l0h0", "l0h1", "l1h0")
    assert tight.hosts == ("l1h1",), "the big job waits for a wave that holds all its hosts"
    assert crowded.hosts == ("l1h1",)


def test_a_job_larger_than_the_budget_is_taken_in_chunks() -> None:
    jobs = {h: frozenset({"huge"}) for h in ("l0h0", "l0h1", "l1h0", "l1h1")}
    fleet = _fleet(2, 2, jobs=jobs)
    wave = plan_wave(list(fleet.domains), fleet, max_unavailable=Budget(2))
    assert wave.hosts == ("l0h0", "l0h1")


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(1, 6),
    st.integers(0, 3),
    st.data(),
)
def test_no_wave_ever_exceeds_a_budget(
    leaves: int, per_leaf: int, total: int, leaf_cap: int, data: st.DataObject
) -> None:
    base = _fleet(leaves, per_leaf, pods=2)
    hosts = sorted(base.domains)
    jobs = {
        h: frozenset(data.draw(st.sets(st.sampled_from(["a", "b", "c"]), max_size=2)))
        for h in hosts
    }
    out = frozenset(data.draw(st.sets(st.sampled_from(hosts), max_size=2)))
    waiting = data.draw(st.sets(st.sampled_from(hosts)))
    waiting -= out
    fleet = Fleet(base.domains, out, jobs)
    per_domain = {"leaf": Budget(leaf_cap)} if leaf_cap else {}

    wave = plan_wave(waiting, fleet, max_unavailable=Budget(total), per_domain=per_domain)

    assert set(wave.hosts) <= waiting
    assert len(set(wave.hosts)) == len(wave.hosts)
    now_out = set(out) | set(wave.hosts)
    if wave.hosts:
        assert len(now_out) <= max(Budget(total).hosts(len(hosts)), len(out))
        if leaf_cap:
            for leaf in {base.domains[h]["leaf"] for h in wave.hosts}:
                in_leaf = [h for h in now_out if base.domains[h]["leaf"] == leaf]
                assert len(in_leaf) <= Budget(leaf_cap).hosts(per_leaf)
    if not out and waiting and not leaf_cap:
        assert wave.hosts, "an empty fleet always makes progress"
