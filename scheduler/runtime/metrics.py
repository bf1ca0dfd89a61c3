"""Prometheus metrics of one scheduler server, in a registry of its own.

Names (Grafana-ready, ``firsthop_`` prefix):

- ``firsthop_queue_depth{queue}``: queued jobs (PENDING or REQUEUED) per queue;
- ``firsthop_jobs{state}``: jobs per state;
- ``firsthop_gpus{state}``: GPUs ``allocated``, ``free`` (schedulable) and ``unavailable``;
- ``firsthop_nodes{state}``: nodes per state; ``firsthop_agents_connected``;
- ``firsthop_scheduling_cycle_seconds``: time the core takes to handle one tick (timeouts
  and a scheduling cycle);
- ``firsthop_placement_cost_ratio``: modelled cost / lower bound of each placement made;
- ``firsthop_rpc_duration_seconds{method,code}``: RPC latency (unary calls; streams measure
  their whole life);
- ``firsthop_agent_messages_dropped_total{kind}`` and
  ``firsthop_agent_messages_throttled_total``: the per-session rate limit of agent streams
  (:mod:`scheduler.runtime.ratelimit`);
- ``firsthop_store_commit_seconds`` and ``firsthop_events_total{event}``: the runtime's
  group commits and the events it applied;
- ``firsthop_maintenance_hosts{campaign,state}``: hosts of each live maintenance campaign per
  state (done, remaining, out); ``firsthop_maintenance_jobs{campaign,kind}``: jobs ``moved``
  or ``waited`` on; ``firsthop_maintenance_gpu_hours_lost{campaign}``.

Gauges over the whole state are read at scrape time from a snapshot the runtime refreshes once
per tick (:meth:`Metrics.set_snapshot`): scraping never walks live structures from the HTTP
thread.

Must not import grpc, generated protos, ``scheduler.api`` or ``scheduler.store``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RATIO_BUCKETS = (1.0, 1.01, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

M = TypeVar("M", Counter, Histogram)


class LabelledChildren(Generic[M]):
    """The children of one labelled metric, each looked up once.

    ``metric.labels(...)`` validates its arguments and takes the metric's lock on every call;
    the hot paths (one event per request, one RPC duration per call) ask this cache instead.
    Children are removed only through :meth:`remove` and :meth:`clear`, which drop them here
    and from the metric alike, so a cached child is always the one the registry exports.
    """

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        """The child of these label values (created on first use)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        """Drop the child of these label values (its series disappears from scrapes)."""
        self._children.pop(values, None)
        self.metric.remove(*values)

    def clear(self) -> None:
        """Drop every child."""
        self._children.clear()
        self.metric.clear()


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """Counts over the whole scheduler state at one instant."""

    queue_depth: Mapping[str, int] = field(default_factory=dict)
    jobs_by_state: Mapping[str, int] = field(default_factory=dict)
    nodes_by_state: Mapping[str, int] = field(default_factory=dict)
    gpus_allocated: int = 0
    gpus_free: int = 0
    gpus_unavailable: int = 0
    agents_connected: int = 0
    campaign_hosts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Campaign -> host state -> hosts."""
    campaign_jobs: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Campaign -> (jobs moved, jobs waited on)."""
    campaign_gpu_hours_lost: Mapping[str, float] = field(default_factory=dict)


class _SnapshotCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self._metrics.snapshot
        depth = GaugeMetricFamily(
            "firsthop_queue_depth", "Queued jobs (PENDING or REQUEUED) per queue", labels=["queue"]
        )
        for queue, count in sorted(snap.queue_depth.items()):
            depth.add_metric([queue], count)
        yield depth
        jobs = GaugeMetricFamily("firsthop_jobs", "Jobs per state", labels=["state"])
        for state, count in sorted(snap.jobs_by_state.items()):
            jobs.add_metric([state], count)
        yield jobs
        nodes = GaugeMetricFamily("firsthop_nodes", "Nodes per state", labels=["state"])
        for state, count in sorted(snap.nodes_by_state.items()):
            nodes.add_metric([state], count)
        yield nodes
        gpus = GaugeMetricFamily("firsthop_gpus", "GPUs by allocation state", labels=["state"])
        gpus.add_metric(["allocated"], snap.gpus_allocated)
        gpus.add_metric(["free"], snap.gpus_free)
        gpus.add_metric(["unavailable"], snap.gpus_unavailable)
        yield gpus
        yield GaugeMetricFamily(
            "firsthop_agents_connected",
            "Agents with an open Connect stream",
            value=snap.agents_connected,
        )
        hosts = GaugeMetricFamily(
            "firsthop_maintenance_hosts",
            "Hosts of each maintenance campaign per state",
            labels=["campaign", "state"],
        )
        for campaign, by_state in sorted(snap.campaign_hosts.items()):
            for state, count in sorted(by_state.items()):
                hosts.add_metric([campaign, state], count)
        yield hosts
        moved = GaugeMetricFamily(
            "firsthop_maintenance_jobs",
            "Jobs a maintenance campaign moved or waited on",
            labels=["campaign", "kind"],
        )
        for campaign, (moved_n, waited_n) in sorted(snap.campaign_jobs.items()):
            moved.add_metric([campaign, "moved"], moved_n)
            moved.add_metric([campaign, "waited"], waited_n)
        yield moved
        lost = GaugeMetricFamily(
            "firsthop_maintenance_gpu_hours_lost",
            "GPU-hours of work lost to a maintenance campaign",
            labels=["campaign"],
        )
        for campaign, hours in sorted(snap.campaign_gpu_hours_lost.items()):
            lost.add_metric([campaign], hours)
        yield lost


class Metrics:
    """The scheduler's metrics and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.snapshot = StateSnapshot()
        self.cycle_seconds = Histogram(
            "firsthop_scheduling_cycle_seconds",
            "Time the core takes to handle one tick (timeouts and a scheduling cycle)",
            buckets=_CYCLE_BUCKETS,
            registry=self.registry,
        )
        self.placement_work_seconds = Histogram(
            "firsthop_placement_work_seconds",
            "Time the placement worker takes for one cycle's placements (off the event loop)",
            buckets=_CYCLE_BUCKETS,
            registry=self.registry,
        )
        self.proposals = Counter(
            "firsthop_placement_proposals_total",
            "Placements computed off the cycle, by whether a cycle used them",
            ["outcome"],
            registry=self.registry,
        )
        self.placement_cost_ratio = Histogram(
            "firsthop_placement_cost_ratio",
            "Modelled communication cost of a placement over its lower bound",
            buckets=_RATIO_BUCKETS,
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "firsthop_rpc_duration_seconds",
            "RPC latency by method and status code",
            ["method", "code"],
            buckets=_RPC_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "firsthop_store_commit_seconds",
            "Duration of one group commit to the store",
            buckets=_CYCLE_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "firsthop_events", "Events applied by the core", ["event"], registry=self.registry
        )
        self.commands = Counter(
            "firsthop_agent_commands", "Commands sent to agents", ["kind"], registry=self.registry
        )
        self.agent_dropped = Counter(
            "firsthop_agent_messages_dropped",
            "Agent messages dropped by the per-session rate limit",
            ["kind"],
            registry=self.registry,
        )
        self.agent_throttled = Counter(
            "firsthop_agent_messages_throttled",
            "Agent messages read late because their session sent too fast",
            registry=self.registry,
        )
        self.up = Gauge("firsthop_up", "1 while the scheduler serves", registry=self.registry)
        self.rpc_durations = LabelledChildren(self.rpc_seconds)
        """``rpc_seconds`` by (method, code), cached (:class:`LabelledChildren`)."""
        self.event_counts = LabelledChildren(self.events)
        """``events`` by event type name, cached."""
        self.command_counts = LabelledChildren(self.commands)
        """``commands`` by kind, cached."""
        self.registry.register(_SnapshotCollector(self))
        self._http: WSGIServer | None = None

    def set_snapshot(self, snapshot: StateSnapshot) -> None:
        """Replace the whole-state counts (one reference swap: safe for the HTTP thread)."""
        self.snapshot = snapshot

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP in a daemon thread; return the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint, if serving."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
