"""Node lifecycle handlers: registration, heartbeats, drain/resume, lost nodes.

::

    UNKNOWN --register--> READY <--drain/resume--> DRAINING --last job leaves--> DRAINED
    READY | DRAINING | DRAINED --no heartbeat for heartbeat_timeout_s--> LOST
    LOST --register or heartbeat--> DRAINED (READY with ``return_lost_nodes``, unless FAILED)

- A LOST node's jobs go through the failure path at once (requeued with the node excluded,
  or failed once out of restarts); no stop command goes to the lost host.
- A FAILED health verdict drains the node (DRAINED, reason ``health_failed``) and sends its
  jobs through the failure path too; SUSPECT only keeps new jobs off the node. Only an
  operator's resume returns a drained node to service (the runtime runs a deep health check
  on it first); a resumed node's health is UNKNOWN until its next heartbeat.
- A LOST node whose agent comes back is DRAINED (reason ``returned_after_loss``): whatever
  took it away may have damaged it, so it returns through the same checked resume. With
  ``SchedulerConfig.return_lost_nodes`` it goes back to READY by itself (like Slurm's
  ``ReturnToService=1``).
- **Exclusions last one outage.** A job that failed because of a host avoids that host
  (``Job.excluded_hosts``) only until the host is back in service: an operator's resume
  (which the runtime grants a DRAINED node only after its deep health check passed), or a
  lost node returning by itself under ``return_lost_nodes``, lifts the host from every live
  job's exclusions. While it is out of service no job can use it anyway; the exclusion is
  what keeps the job off it if it comes back unrepaired. Like Slurm, which drains the node
  rather than marking it bad for one job, the node's state carries the verdict, so a long
  job does not run out of hosts as repaired ones accumulate in its exclusions.
- Heartbeats are not persisted (4,096 hosts every 5 s would be ~800 writes/s for nothing a
  restart needs: after a restart every node gets a fresh timeout); changes of state or health
  are. A heartbeat also reconciles: ranks of a job attempt that should not run on the host
  are stopped (``orphan``), and fences of attempts the agent no longer runs are released.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from firsthop.reasons import ErrorReason, FailureReason, NodeReason, StopReason
from scheduler.core import repair
from scheduler.core.actions import StopRanks, stop_command_id
from scheduler.core.context import Ctx
from scheduler.core.errors import UnknownNodeError
from scheduler.core.events import (
    HeartbeatReceived,
    NodeDrainRequested,
    NodeRegistered,
    NodeResumeRequested,
    NodeSpareSet,
)
from scheduler.core.jobs import host_stopped, interrupt
from scheduler.core.records import Node
from scheduler.core.state import SchedulerState
from scheduler.core.states import (
    Health,
    InvalidTransitionError,
    JobState,
    NodeState,
)
from topology.errors import InvalidInputError

N = NodeState
WATCHED = frozenset({N.READY, N.DRAINING, N.DRAINED})
"""States in which missing heartbeats make a node LOST."""


def get_node(state: SchedulerState, name: str) -> Node:
    """The node called ``name`` or :class:`UnknownNodeError`."""
    node = state.nodes.get(name)
    if node is None:
        raise UnknownNodeError(f"unknown node {name!r} (not a host of the topology)")
    return node


def register(ctx: Ctx, event: NodeRegistered) -> None:
    """An agent (re)registered: UNKNOWN -> READY, LOST -> DRAINED (module docstring); other
    states keep the operator's say.

    Raises:
        UnknownNodeError; InvalidInputError (``gpu_count_mismatch``).
    """
    state = ctx.state
    node = get_node(state, event.node)
    if event.gpus != node.gpus:
        raise InvalidInputError(
            f"node {node.name} registered {event.gpus} GPUs; the topology has {node.gpus}",
            reason=ErrorReason.GPU_COUNT_MISMATCH,
        )
    registered = replace(
        node,
        agent_version=event.agent_version,
        address=event.address,
        registered_at=event.at,
        last_heartbeat_at=event.at,
    )
    if node.state is N.UNKNOWN:
        state.move_node(node, N.READY, NodeReason.REGISTERED, updated=registered)
    elif node.state is N.LOST:
        node = state.put_node(registered)
        _return_lost(ctx, node, node.health)
    else:
        state.put_node(registered)


def heartbeat(ctx: Ctx, event: HeartbeatReceived) -> None:
    """A heartbeat: liveness, health verdict, reconciliation of running ranks.

    Raises:
        UnknownNodeError; InvalidTransitionError (``node_not_registered``) before the agent
        registered.
    """
    state = ctx.state
    node = get_node(state, event.node)
    if node.state is N.UNKNOWN:
        raise InvalidTransitionError(
            f"node {node.name} has not registered", reason=ErrorReason.NODE_NOT_REGISTERED
        )
    state.touch_node(node, event.at)
    node = state.nodes[node.name]
    failed_now = event.health is Health.FAILED and node.health is not Health.FAILED
    if node.state is N.LOST:
        node = _return_lost(ctx, node, event.health)
    elif event.health is not node.health:
        reason = node.reason
        if event.health is not Health.HEALTHY:
            reason = f"health {event.health.value.lower()}: {event.detail}".rstrip(": ")
        node = state.put_node(replace(node, health=event.health, reason=reason))
    if failed_now:
        _fail_node(ctx, node, event.at, event.detail)
    _reconcile(ctx, node.name, event)


def _return_lost(ctx: Ctx, node: Node, health: Health) -> Node:
    """A LOST node's agent is back: DRAINED awaiting a checked resume (or READY, see the
    module docstring)."""
    if ctx.config.return_lost_nodes and health is not Health.FAILED:
        back = ctx.state.move_node(
            node, N.READY, NodeReason.RECONNECTED, updated=replace(node, health=health)
        )
        lift_exclusions(ctx, node.name)
        return back
    reason = f"{NodeReason.RETURNED_AFTER_LOSS}: resume it to run a deep health check and return it"
    return ctx.state.move_node(node, N.DRAINED, reason, updated=replace(node, health=health))


def _fail_node(ctx: Ctx, node: Node, at: datetime, detail: str) -> None:
    state = ctx.state
    reason = f"{NodeReason.HEALTH_FAILED}: {detail}" if detail else NodeReason.HEALTH_FAILED
    for job in state.jobs_on(node.name):
        if job.state is JobState.PREEMPTED:
            ctx.stop(job, node.name, StopReason.NODE_FAILED, force=True)
            host_stopped(ctx, repair.vacate_more(job, node.name), node.name, at)
            continue
        gone: frozenset[str] = frozenset()
        if repair.eligible(ctx, job, FailureReason.NODE_FAILED):
            # Repaired in place: the failed host is told to stop at once and counts as gone.
            ctx.stop(job, node.name, StopReason.NODE_FAILED, force=True)
            gone = frozenset({node.name})
        interrupt(
            ctx,
            job,
            at,
            FailureReason.NODE_FAILED,
            node.name,
            exclude=True,
            message=f"node {node.name} failed: {detail or 'health check'}",
            unreachable=gone,
        )
    node = state.nodes[node.name]
    if node.state in (N.READY, N.DRAINING) and not state.host_jobs.get(node.name):
        state.move_node(node, N.DRAINED, reason)
    elif node.state is not N.DRAINED:
        state.put_node(replace(node, reason=reason))


def _reconcile(ctx: Ctx, name: str, event: HeartbeatReceived) -> None:
    state = ctx.state
    for fence in state.fences_on(name):
        if event.running.get(fence.job_id) != fence.attempt:
            state.release_fence(fence.job_id, name, fence.attempt)
    for job_id, attempt in sorted(event.running.items()):
        job = state.jobs.get(job_id)
        expected = (
            job is not None
            and job.restarts == attempt
            and job.allocation is not None
            and name in job.allocation.hosts
        )
        if expected or (job_id, name, attempt) in state.fences:
            continue
        ctx.out.stops.append(
            StopRanks(
                command_id=stop_command_id(job_id, attempt, name, force=True),
                job_id=job_id,
                node=name,
                attempt=attempt,
                grace_s=0.0,
                reason=StopReason.ORPHAN,
            )
        )


def drain(ctx: Ctx, event: NodeDrainRequested) -> None:
    """No new jobs on the node: DRAINING while it holds jobs, else DRAINED."""
    state = ctx.state
    node = get_node(state, event.node)
    reason = event.reason or "drained by operator"
    if node.state in (N.DRAINING, N.DRAINED):
        if node.reason != reason:
            state.put_node(replace(node, reason=reason))
        return
    dst = N.DRAINING if state.host_jobs.get(node.name) else N.DRAINED
    state.move_node(node, dst, reason)


def set_spare(ctx: Ctx, event: NodeSpareSet) -> None:
    """Put hosts into the spare pool or take them out (all or none).

    Spares run only preemptible jobs (``preemptible: true``), which are preempted before
    other candidates, and repairs: in-place repairs take them before other free hosts, and
    a job back in the queue after a failure may be placed on them
    (:func:`scheduler.core.cycle.may_use_spares`).

    Raises:
        UnknownNodeError for any unknown host (nothing changes).
    """
    state = ctx.state
    found = [get_node(state, name) for name in event.nodes]
    for node in found:
        if node.spare != event.spare:
            state.put_node(replace(node, spare=event.spare))
    if not event.spare and found:
        state.capacity_epoch += 1  # ordinary jobs may use them now: refusals are stale


def resume(ctx: Ctx, event: NodeResumeRequested) -> None:
    """Back to service: DRAINING/DRAINED -> READY (health UNKNOWN until the next heartbeat),
    and no job excludes the node any longer (module docstring); resuming a READY node only
    lifts its exclusions.

    Raises:
        UnknownNodeError; InvalidTransitionError for a node never registered or LOST.
    """
    state = ctx.state
    node = get_node(state, event.node)
    if node.state is N.READY:
        lift_exclusions(ctx, node.name)
        return
    if node.state in (N.UNKNOWN, N.LOST) or node.registered_at is None:
        raise InvalidTransitionError(
            f"node {node.name} is {node.state}: its agent must register first",
            reason=ErrorReason.NODE_NOT_REGISTERED,
        )
    health = Health.UNKNOWN if node.health is Health.FAILED else node.health
    state.move_node(
        node, N.READY, event.reason or NodeReason.RESUMED, updated=replace(node, health=health)
    )
    lift_exclusions(ctx, node.name)


def lift_exclusions(ctx: Ctx, name: str) -> list[str]:
    """Host ``name`` is back in service: take it out of every live (queued or allocated)
    job's ``excluded_hosts``; the ids of the jobs changed. Finished jobs keep theirs as
    history."""
    state = ctx.state
    live = set(state.allocated)
    for keys in state.pending.values():
        live.update(key[2] for key in keys)
    changed: list[str] = []
    for job_id in sorted(live):
        job = state.jobs[job_id]
        if name in job.excluded_hosts:
            state.put_job(replace(job, excluded_hosts=job.excluded_hosts - {name}))
            changed.append(job_id)
    return changed


def detect_lost(ctx: Ctx, at: datetime) -> None:
    """Nodes silent for longer than the heartbeat timeout become LOST (failure path)."""
    state = ctx.state
    cutoff = at - timedelta(seconds=ctx.config.heartbeat_timeout_s)
    for node in list(state.nodes.values()):
        if node.state not in WATCHED or node.last_heartbeat_at is None:
            continue
        if node.last_heartbeat_at < cutoff:
            lose(ctx, node, at)


def lose(ctx: Ctx, node: Node, at: datetime) -> None:
    """Mark ``node`` LOST and send its jobs through the failure path."""
    state = ctx.state
    silent = (at - node.last_heartbeat_at).total_seconds() if node.last_heartbeat_at else 0.0
    for job in state.jobs_on(node.name):
        if job.state is JobState.PREEMPTED:
            host_stopped(ctx, repair.vacate_more(job, node.name), node.name, at)
            continue
        interrupt(
            ctx,
            job,
            at,
            FailureReason.NODE_LOST,
            node.name,
            exclude=True,
            message=f"node {node.name} lost (no heartbeat for {silent:.0f} s)",
            unreachable=frozenset({node.name}),
        )
    for fence in state.fences_on(node.name):
        state.release_fence(fence.job_id, node.name, fence.attempt)
    node = state.nodes[node.name]
    state.move_node(node, N.LOST, NodeReason.HEARTBEAT_TIMEOUT)


def refresh_heartbeats(ctx: Ctx, at: datetime) -> None:
    """After a restart, give every watched node a full timeout from ``at``."""
    state = ctx.state
    for node in list(state.nodes.values()):
        if node.state in WATCHED:
            state.touch_node(node, at)
