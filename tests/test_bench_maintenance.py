"""The maintenance benchmark's simulation on a small fleet: ``--busy migrate`` finishes,
moves jobs and loses no work, where killing loses work and waiting takes longer."""

from __future__ import annotations

import pytest

from bench.maintenance import GPUS, run_baseline, run_firsthop
from scheduler.core.campaign_records import BusyPolicy
from topology.generators import fat_tree
from topology.model import Topology


@pytest.mark.slow
def test_migrate_moves_jobs_without_losing_work_on_a_small_fleet() -> None:
    topology = Topology.from_spec(fat_tree(1, 4, 8, gpus_per_host=GPUS))  # 32 hosts
    migrate = run_firsthop(topology, 1, BusyPolicy.MIGRATE)
    wait = run_firsthop(topology, 1, BusyPolicy.WAIT)
    kill = run_baseline(topology, 1)
    assert migrate["finished"]
    assert migrate["gpu_hours_lost"] == 0.0
    assert migrate["campaign_gpu_hours_lost"] == 0.0
    assert migrate["jobs_moved"] > 0
    assert migrate["moves"] >= migrate["jobs_moved"]
    assert migrate["jobs_waited"] == 0
    assert migrate["peak_capacity_out_hosts"] <= 1  # 5 % of 32 hosts
    assert kill["gpu_hours_lost"] > 0.0
    assert migrate["wall_time_sim_h"] < wait["wall_time_sim_h"]
