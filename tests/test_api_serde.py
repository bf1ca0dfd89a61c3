"""The job and admin wire, both halves: round trips where one module holds both directions
(job specs, vocabularies, topologies, queue settings), and the server's encoders read by the
client's decoders (jobs, nodes, queues, the cluster status); bad input refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest
from server_builders import small_topology, spec

from firsthop.reasons import FailureReason
from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api import cluster_serde, serde, spec_serde, topology_serde
from scheduler.client import views, wire
from scheduler.core.records import Allocation, Failure, Job, Node, Queue, RankSlot
from scheduler.core.states import Health, JobState, NodeState
from scheduler.core.status import ClusterStatus, QueueStatus, TierStatus, ettr
from scheduler.jobspec_file import load_job_spec
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
        failures=(Failure(at=T0, reason=FailureReason.NODE_LOST, host="h0009", lost_s=42.5),),
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

    assert spec_serde.job_spec_from_proto(spec_serde.job_spec_to_proto(job_spec)) == job_spec


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

    assert spec_serde.job_spec_from_proto(spec_serde.job_spec_to_proto(full)) == full


def test_invalid_wire_specs_fail_like_files() -> None:
    zero = spec_serde.job_spec_to_proto(spec(8))
    zero.gpus = 0
    mismatch = spec_serde.job_spec_to_proto(spec(16, parallelism={"tp": 8, "dp": 2}))
    mismatch.parallelism.dp = 3

    with pytest.raises(InvalidInputError, match="gpus") as bad_gpus:
        spec_serde.job_spec_from_proto(zero)
    with pytest.raises(InvalidInputError) as bad_product:
        spec_serde.job_spec_from_proto(mismatch)

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
def test_the_client_reads_the_public_view_of_every_job(job: Job) -> None:
    now = T0 + timedelta(minutes=10)
    data = serde.job_to_proto(job, now).SerializeToString()

    view = wire.job_view_from_proto(jobs_pb2.Job.FromString(data))

    def placement(alloc: Allocation | None) -> views.PlacementView | None:
        if alloc is None:
            return None
        ranks = tuple(views.RankView(s.rank, s.host, s.gpu) for s in alloc.ranks)
        return views.PlacementView(ranks, alloc.hosts, alloc.cost, alloc.lower_bound, T0)

    assert view == views.JobView(
        id=job.id,
        spec=job.spec,
        user=job.user,
        state=job.state,
        reason=job.reason,
        message=job.message,
        submitted_at=job.submitted_at,
        updated_at=job.updated_at,
        submission_id=job.submission_id,
        placement=placement(job.allocation),
        last_placement=placement(job.last_allocation),
        first_started_at=job.first_started_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_checkpoint_at=job.last_checkpoint_at,
        restarts=job.restarts,
        fault_restarts=job.fault_restarts,
        failures=tuple(views.FailureView(f.at, f.reason, f.host, f.lost_s) for f in job.failures),
        excluded_hosts=tuple(sorted(job.excluded_hosts)),
        hosts_running=len(job.started_hosts),
        productive_s=job.productive_s,
        lost_s=job.lost_s,
        ettr=ettr(job, now),
        as_of=now,
    )


def test_the_server_computes_ettr_and_lost_time() -> None:
    job = _job(
        first_started_at=T0 + timedelta(seconds=10),
        productive_s=75.0,
        failures=(
            Failure(T0 + timedelta(seconds=50), FailureReason.NODE_LOST, "h2", 15.0),
            Failure(T0 + timedelta(seconds=60), FailureReason.PREEMPTED, None, 5.0),
        ),
    )

    running = serde.job_to_proto(job, T0 + timedelta(seconds=110))
    never_ran = serde.job_to_proto(replace(job, first_started_at=None), T0)

    assert running.ettr == pytest.approx(0.75)
    assert running.lost_s == 20.0
    assert running.fault_restarts == 1  # the preemption does not count
    assert not never_ran.HasField("ettr")
    assert wire.job_view_from_proto(never_ran).ettr is None


def test_the_public_job_keeps_the_scheduler_bookkeeping_out() -> None:
    fields = set(jobs_pb2.Job.DESCRIPTOR.fields_by_name)

    assert not fields & {"version", "started_hosts", "exited_ranks", "stopped_hosts"}
    assert not fields & {"stop_deadline"}
    assert {19, 20, 21, 22, 23}.isdisjoint(f.number for f in jobs_pb2.Job.DESCRIPTOR.fields)


def test_allocation_carries_its_hosts_in_node_rank_order() -> None:
    wire = serde.allocation_to_proto(_job().allocation)  # type: ignore[arg-type]

    assert list(wire.hosts) == ["h0001", "h0002"]


@pytest.mark.parametrize("state", list(JobState))
def test_every_job_state_maps_both_ways(state: JobState) -> None:
    assert spec_serde.job_state_from_proto(spec_serde.job_state_to_proto(state)) is state


def test_unspecified_job_state_is_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        spec_serde.job_state_from_proto(jobs_pb2.JOB_STATE_UNSPECIFIED)

    assert info.value.reason == "invalid_job_state"


@pytest.mark.parametrize("state", list(NodeState))
@pytest.mark.parametrize("health", list(Health))
def test_the_client_reads_every_node(state: NodeState, health: Health) -> None:
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
    msg = serde.node_to_proto(node)
    msg.gpus_allocated, msg.job_ids[:], msg.location[:] = 4, ["j-1"], ["leaf0", "pod0"]

    assert wire.node_view_from_proto(msg) == views.NodeView(
        name="h0001",
        state=state,
        health=health,
        gpus=8,
        reason="why",
        agent_version="v1",
        address="10.0.0.7",
        registered_at=T0,
        last_heartbeat_at=T0 + timedelta(seconds=1),
        gpus_allocated=4,
        job_ids=("j-1",),
        location=("leaf0", "pod0"),
    )


def test_unspecified_node_enums_read_as_unknown() -> None:
    node = wire.node_view_from_proto(admin_pb2.Node(name="h1", gpus=8))

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


def test_queue_settings_the_client_sends_are_what_the_server_reads() -> None:
    settings = views.QueueSettings("train", 9, 512, 2.5, MappingProxyType({"team": "llm"}))

    queue = serde.queue_from_proto(wire.queue_settings_to_proto(settings))

    assert queue == Queue("train", 9, 512, 2.5, MappingProxyType({"team": "llm"}))
    assert wire.queue_settings_from_proto(serde.queue_to_proto(queue)) == settings


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
    wire = topology_serde.topology_to_proto(topology)
    back = topology_serde.topology_from_proto(wire)

    assert topology_serde.topology_to_proto(back) == wire
    assert list(back.hosts) == list(topology.hosts)
    assert back.domains == topology.domains


def test_a_topology_message_that_is_no_tree_is_refused() -> None:
    wire = topology_serde.topology_to_proto(small_topology())
    wire.domains[-1].parent = "missing-switch"

    with pytest.raises(TopologyError):
        topology_serde.topology_from_proto(wire)


def test_the_client_reads_the_cluster_status() -> None:
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
        queues=(QueueStatus("default", 0, 128, 1.0, 2, 16, 3, 64),),
        tiers=(
            TierStatus("host", 16, 6, 1, 9, 8),
            TierStatus("leaf", 4, 1, 1, 2, 32),
            TierStatus("cluster", 1, 0, 1, 0, 48),
        ),
        fits={8: 6, 64: 0, 512: 0},
    )

    view = wire.cluster_view_from_proto(cluster_serde.cluster_status_to_proto(status))

    assert view == views.ClusterView(
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
        queues=(views.QueueView(views.QueueSettings("default", 0, 128, 1.0), 2, 3, 64, 16),),
        tiers=tuple(
            views.TierView(*t)
            for t in (
                ("host", 16, 6, 1, 9, 8),
                ("leaf", 4, 1, 1, 2, 32),
                ("cluster", 1, 0, 1, 0, 48),
            )
        ),
        fits={8: 6, 64: 0, 512: 0},
    )
    assert view.utilisation == status.utilisation
