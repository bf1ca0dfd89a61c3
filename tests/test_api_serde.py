"""Round trips of every wire translation: ``from(to(x)) == x``, and bad input refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest
from server_builders import small_topology, spec

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api import cluster_serde, serde
from scheduler.core.records import Allocation, Failure, Job, Node, Queue, RankSlot
from scheduler.core.states import Health, JobState, NodeState
from scheduler.core.status import ClusterStatus, QueueStatus, TierStatus
from scheduler.jobspec import load_job_spec
from topology.errors import InvalidInputError, TopologyError
from topology.generators import dual_plane, rail_optimized
from topology.model import Topology
from topology.spec import SwitchSpec, TopologySpec
from topology.tiers import LEAF_400G, POD_SPINE

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "jobs").glob("*.yaml"))


def _job(**fields: object) -> Job:
    ranks = tuple(RankSlot(rank=r, host=f"h000{1 + r // 8}", gpu=r % 8) for r in range(16))
    base = Job(
        id="j-1",
        spec=spec(16, 5, parallelism={"tp": 8, "dp": 2}, priority=3, max_restarts=2),
        user="ann",
        state=JobState.RUNNING,
        submitted_at=T0,
        updated_at=T0 + timedelta(seconds=5),
        submission_id="sub-1",
        reason="running",
        message="all ranks up",
        allocation=Allocation(ranks=ranks, cost=12.5, lower_bound=10.0, placed_at=T0),
        first_started_at=T0 + timedelta(seconds=1),
        started_at=T0 + timedelta(seconds=2),
        last_checkpoint_at=T0 + timedelta(seconds=3),
        restarts=1,
        failures=(Failure(at=T0, reason="node_lost", host="h0009", lost_s=42.5),),
        excluded_hosts=frozenset({"h0009", "h0010"}),
        productive_s=17.0,
        started_hosts=frozenset({"h0001", "h0002"}),
        exited_ranks=frozenset({3}),
        version=7,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_job_specs_round_trip(path: Path) -> None:
    job_spec = load_job_spec(path)

    assert serde.job_spec_from_proto(serde.job_spec_to_proto(job_spec)) == job_spec


def test_job_spec_with_every_field_round_trips() -> None:
    full = spec(
        64,
        parallelism={"tp": 8, "dp": 8, "order": "dp-tp", "order_convention": "row_major"},
        env={"A": "1"},
        priority=-5,
        queue="train",
        checkpoint={"dir": "/ckpt", "interval_s": 600},
        max_restarts=4,
        time_limit_s=3600,
        launch="per_host",
        placement={
            "required_tier": {"dp": "pod"},
            "nvlink_dims": ["cp"],
            "max_leaves": 4,
            "volumes_gb": {"tp": 10.0, "dp": 1.5},
        },
    )

    assert serde.job_spec_from_proto(serde.job_spec_to_proto(full)) == full


def test_invalid_wire_specs_fail_like_files() -> None:
    zero = serde.job_spec_to_proto(spec(8))
    zero.gpus = 0
    mismatch = serde.job_spec_to_proto(spec(16, parallelism={"tp": 8, "dp": 2}))
    mismatch.parallelism.dp = 3

    with pytest.raises(InvalidInputError, match="gpus") as bad_gpus:
        serde.job_spec_from_proto(zero)
    with pytest.raises(InvalidInputError) as bad_product:
        serde.job_spec_from_proto(mismatch)

    assert bad_gpus.value.reason == "invalid_job_spec"
    assert bad_product.value.reason == "parallelism_mismatch"


@pytest.mark.parametrize(
    "job",
    [
        _job(),
        _job(state=JobState.PENDING, allocation=None, submission_id=None, failures=()),
        _job(
            state=JobState.PREEMPTED,
            stopped_hosts=frozenset({"h0001"}),
            stop_deadline=T0 + timedelta(minutes=1),
        ),
        _job(
            state=JobState.SUCCEEDED,
            allocation=None,
            last_allocation=Allocation(
                ranks=(RankSlot(0, "h0003", 1),), cost=1.0, lower_bound=1.0, placed_at=T0
            ),
            finished_at=T0 + timedelta(hours=1),
        ),
    ],
    ids=["running", "pending", "preempted", "succeeded"],
)
def test_jobs_round_trip(job: Job) -> None:
    wire = serde.job_to_proto(job)
    parsed = jobs_pb2.Job.FromString(wire.SerializeToString())

    assert serde.job_from_proto(parsed) == job


def test_allocation_carries_its_hosts_in_node_rank_order() -> None:
    wire = serde.allocation_to_proto(_job().allocation)  # type: ignore[arg-type]

    assert list(wire.hosts) == ["h0001", "h0002"]


@pytest.mark.parametrize("state", list(JobState))
def test_every_job_state_maps_both_ways(state: JobState) -> None:
    assert serde.job_state_from_proto(serde.job_state_to_proto(state)) is state


def test_unspecified_job_state_is_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        serde.job_state_from_proto(jobs_pb2.JOB_STATE_UNSPECIFIED)

    assert info.value.reason == "invalid_job_state"


@pytest.mark.parametrize("state", list(NodeState))
@pytest.mark.parametrize("health", list(Health))
def test_nodes_round_trip(state: NodeState, health: Health) -> None:
    node = Node(
        name="h0001",
        state=state,
        gpus=8,
        health=health,
        reason="why",
        agent_version="v1",
        address="10.0.0.7",
        registered_at=T0,
        last_heartbeat_at=T0 + timedelta(seconds=1),
        version=3,
    )

    assert serde.node_from_proto(serde.node_to_proto(node)) == node


def test_unspecified_node_enums_read_as_unknown() -> None:
    node = serde.node_from_proto(admin_pb2.Node(name="h1", gpus=8))

    assert node.state is NodeState.UNKNOWN
    assert node.health is Health.UNKNOWN


@pytest.mark.parametrize(
    "queue",
    [
        Queue(name="default"),
        Queue(
            name="train",
            priority=9,
            gpu_quota=512,
            weight=2.5,
            labels=MappingProxyType({"team": "llm"}),
            version=4,
        ),
        Queue(name="zero-quota", gpu_quota=0),
    ],
)
def test_queues_round_trip(queue: Queue) -> None:
    assert serde.queue_from_proto(serde.queue_to_proto(queue)) == queue


def test_queue_weight_zero_means_one_and_negative_is_refused() -> None:
    assert serde.queue_from_proto(admin_pb2.Queue(name="q")).weight == 1.0
    with pytest.raises(InvalidInputError) as info:
        serde.queue_from_proto(admin_pb2.Queue(name="q", weight=-1))

    assert info.value.reason == "invalid_queue"


def _optional_tier_topology() -> Topology:
    leaf = LEAF_400G
    pod = POD_SPINE.model_copy(update={"optional": True})
    spec_ = TopologySpec(
        name="mixed",
        tiers=(leaf.model_copy(update={"optional": True}), pod),
        switches=(
            SwitchSpec(name="p0", tier="pod"),
            SwitchSpec(name="p0l0", tier="leaf", parent="p0", hosts=("a1", "a2")),
            SwitchSpec(name="l9", tier="leaf", hosts=("b1",)),
            SwitchSpec(name="p1", tier="pod", hosts=("c1",)),
        ),
    )
    return Topology.from_spec(spec_)


@pytest.mark.parametrize(
    "topology",
    [
        small_topology(),
        Topology.from_spec(rail_optimized(2, 2, 2, gpus_per_host=8)),
        Topology.from_spec(dual_plane(2, 2, 2, gpus_per_host=8)),
        _optional_tier_topology(),
    ],
    ids=["fat-tree", "rail-optimized", "dual-plane", "optional-tiers"],
)
def test_topologies_round_trip(topology: Topology) -> None:
    wire = cluster_serde.topology_to_proto(topology)
    back = cluster_serde.topology_from_proto(wire)

    assert cluster_serde.topology_to_proto(back) == wire
    assert list(back.hosts) == list(topology.hosts)
    assert back.domains == topology.domains


def test_a_topology_message_that_is_no_tree_is_refused() -> None:
    wire = cluster_serde.topology_to_proto(small_topology())
    wire.domains[-1].parent = "missing-switch"

    with pytest.raises(TopologyError):
        cluster_serde.topology_from_proto(wire)


def test_cluster_status_round_trips() -> None:
    status = ClusterStatus(
        at=T0,
        hosts=16,
        gpus=128,
        schedulable_gpus=120,
        allocated_gpus=64,
        fenced_gpus=8,
        free_gpus=48,
        stranded_gpus=3,
        stranded_hosts=1,
        nodes_by_state={"DRAINED": 1, "READY": 15},
        nodes_by_health={"HEALTHY": 16},
        jobs_by_state={"PENDING": 2, "RUNNING": 3},
        queues=(QueueStatus("default", 0, None, 1.0, 2, 16, 3, 64),),
        tiers=(
            TierStatus("host", 16, 6, 1, 9, 8),
            TierStatus("leaf", 4, 1, 1, 2, 32),
            TierStatus("cluster", 1, 0, 1, 0, 48),
        ),
        fits={8: 6, 64: 0, 512: 0},
    )

    assert cluster_serde.cluster_status_from_proto(
        cluster_serde.cluster_status_to_proto(status)
    ) == (status)
