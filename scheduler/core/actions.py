"""What to do: the actions :meth:`Scheduler.handle` returns (imperative, frozen dataclasses).

The runtime executes them in the order given:

1. :class:`PersistChanges` comes first whenever the event changed anything; the runtime makes
   it durable before it acknowledges the request that caused the event or sends any command;
2. :class:`NotifyJobChanged` / :class:`NotifyNodeChanged` feed watch streams and metrics;
3. :class:`StopRanks` come before :class:`StartRanks`, so an agent told to stop one job's ranks
   and start another's on the same GPUs receives them in that order.

Agent commands are idempotent: each carries a ``command_id`` derived from the job id, attempt
and host, so an agent can drop a repeat (the core resends commands after a restart).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from firsthop.reasons import StopReason
from scheduler.core.campaign_records import Campaign
from scheduler.core.records import Job, Node, Queue, RankSlot


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Records created or changed by one handled event (at most one version of each).

    Every record's ``version`` is one more than the version last handed out for it (1 for a
    new record), which is what the store's optimistic check relies on.
    """

    jobs: tuple[Job, ...] = ()
    nodes: tuple[Node, ...] = ()
    queues: tuple[Queue, ...] = ()
    campaigns: tuple[Campaign, ...] = ()
    """Maintenance campaigns (:mod:`scheduler.core.campaigns`)."""

    def __bool__(self) -> bool:
        return bool(self.jobs or self.nodes or self.queues or self.campaigns)

    def merged(self, later: ChangeSet) -> ChangeSet:
        """This change set followed by ``later`` (newest version of each record wins).

        Lets a runtime commit several events in one transaction (group commit).
        """
        jobs = {j.id: j for j in (*self.jobs, *later.jobs)}
        nodes = {n.name: n for n in (*self.nodes, *later.nodes)}
        queues = {q.name: q for q in (*self.queues, *later.queues)}
        campaigns = {c.name: c for c in (*self.campaigns, *later.campaigns)}
        return ChangeSet(
            tuple(jobs.values()),
            tuple(nodes.values()),
            tuple(queues.values()),
            tuple(campaigns.values()),
        )


@dataclass(frozen=True, slots=True)
class PersistChanges:
    """Make these records durable (atomically) before acknowledging or sending commands."""

    changes: ChangeSet


@dataclass(frozen=True, slots=True)
class NotifyJobChanged:
    """A job changed state (or reason): tell its watchers."""

    job: Job


@dataclass(frozen=True, slots=True)
class NotifyNodeChanged:
    """A node changed state or health."""

    node: Node


def _no_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class StartRanks:
    """Start a job's ranks on one host.

    Every rank's launcher environment (DESIGN.md "Rank environment") is a rule of the core:
    :meth:`rank_env` derives it from these fields, and the wire carries it as computed, so
    every agent (simulated or real) launches ranks identically.

    Attributes:
        command_id: ``start:<job>:<attempt>:<host>``; repeats of it are the same command.
        job_id: the job.
        node: the host that runs these ranks.
        attempt: the job's restart count; echo it in every report about these ranks.
        job_name: the spec's name.
        user: the submitting user.
        ranks: this host's ranks (rank, host, local GPU), in rank order.
        node_rank: position of this host in the job's host order.
        num_nodes: hosts of the job.
        world_size: ranks of the job.
        master_addr: the address of the host of rank 0 (as its agent registered it), or its
            name.
        master_port: rendezvous port, derived from job id and attempt.
        command: argv of every rank.
        env: the spec's environment.
        checkpoint_dir: the spec's checkpoint directory, if any.
        time_limit_s: the spec's time limit, if any.
        per_host: start one process for all of the host's ranks (``launch: per_host``).
        checkpoint_signal: the signal that asks the job to checkpoint before a planned stop
            (``checkpoint.signal``), when the job checkpoints.
        checkpoint_grace_s: seconds it then has before SIGKILL (operator-bounded).
    """

    command_id: str
    job_id: str
    node: str
    attempt: int
    job_name: str
    user: str
    ranks: tuple[RankSlot, ...]
    node_rank: int
    num_nodes: int
    world_size: int
    master_addr: str
    master_port: int
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=_no_env)
    checkpoint_dir: str | None = None
    time_limit_s: int | None = None
    per_host: bool = False
    checkpoint_signal: str | None = None
    checkpoint_grace_s: float | None = None

    def rank_env(self, local_rank: int) -> dict[str, str]:
        """The launcher environment of the ``local_rank``-th rank of this host.

        ``RANK`` (the slot's rank), ``LOCAL_RANK`` (position in ``ranks``), ``WORLD_SIZE``,
        ``LOCAL_WORLD_SIZE`` (``len(ranks)``), ``NODE_RANK``, ``MASTER_ADDR``,
        ``MASTER_PORT``, ``CUDA_VISIBLE_DEVICES`` (this host's GPUs of the job, in local-rank
        order), ``FIRSTHOP_JOB_ID``, ``FIRSTHOP_RESTART_COUNT`` (``attempt``),
        ``FIRSTHOP_NODE_RANK``, ``FIRSTHOP_NNODES``, ``FIRSTHOP_HOST`` and, when the job
        checkpoints, ``FIRSTHOP_CHECKPOINT_DIR``, ``FIRSTHOP_CHECKPOINT_SIGNAL`` (the signal
        that asks for a checkpoint before a planned stop) and ``FIRSTHOP_CHECKPOINT_GRACE_S``
        (whole seconds it then has before SIGKILL). The spec's ``env`` is not included: the
        agent sets it first and these on top.
        """
        slot = self.ranks[local_rank]
        env = {
            "RANK": str(slot.rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(len(self.ranks)),
            "NODE_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "CUDA_VISIBLE_DEVICES": ",".join(str(s.gpu) for s in self.ranks),
            "FIRSTHOP_JOB_ID": self.job_id,
            "FIRSTHOP_RESTART_COUNT": str(self.attempt),
            "FIRSTHOP_NODE_RANK": str(self.node_rank),
            "FIRSTHOP_NNODES": str(self.num_nodes),
            "FIRSTHOP_HOST": self.node,
        }
        if self.checkpoint_dir is not None:
            env["FIRSTHOP_CHECKPOINT_DIR"] = self.checkpoint_dir
        if self.checkpoint_signal is not None:
            env["FIRSTHOP_CHECKPOINT_SIGNAL"] = self.checkpoint_signal
        if self.checkpoint_grace_s is not None:
            env["FIRSTHOP_CHECKPOINT_GRACE_S"] = f"{self.checkpoint_grace_s:g}"
        return env


@dataclass(frozen=True, slots=True)
class StopRanks:
    """Stop a job's ranks on one host: ``signal`` (SIGTERM), then SIGKILL after ``grace_s``.

    Attributes:
        command_id: ``stop:<job>:<attempt>:<host>`` (``...:force`` for a forced resend).
        job_id: the job.
        node: the host.
        attempt: the attempt whose ranks to stop (ranks of another attempt are left alone).
        grace_s: seconds between SIGTERM and SIGKILL (0: kill at once).
        reason: stable reason (``preempted``, ``cancelled``, ``failed``, ``time_limit``,
            ``orphan``, ``node_failed``, ``rank_exited``).
        signal: the signal sent first: ``SIGTERM``, or the job's checkpoint signal on a
            planned (graceful) stop.
    """

    command_id: str
    job_id: str
    node: str
    attempt: int
    grace_s: float
    reason: StopReason
    signal: str = "SIGTERM"


@dataclass(frozen=True, slots=True)
class RunMaintenance:
    """Run one step of a maintenance campaign on one host.

    Attributes:
        command_id: ``maint:<campaign>:<host>:<attempt>:<step>``; the agent runs an id once
            and answers a repeat with the stored result.
        campaign: the campaign's name (``FIRSTHOP_CAMPAIGN`` of the action).
        node: the host (``FIRSTHOP_HOST``).
        attempt: the host's attempt in the campaign; echo it in the report.
        step: ``action`` (run ``argv``) or ``check`` (run the health check only).
        argv: the action's argv, never a shell string (empty for ``check``).
        timeout_s: the action's time limit (killed and reported failed after it).
        health_check: ``fast`` or ``deep``.
    """

    command_id: str
    campaign: str
    node: str
    attempt: int
    step: str
    argv: tuple[str, ...]
    timeout_s: float
    health_check: str


Action = (
    PersistChanges | NotifyJobChanged | NotifyNodeChanged | StartRanks | StopRanks | RunMaintenance
)
"""Every action :meth:`Scheduler.handle <scheduler.core.scheduler.Scheduler.handle>` returns."""


def start_command_id(job_id: str, attempt: int, node: str) -> str:
    """The id of the start command of ``job_id``'s attempt on ``node``."""
    return f"start:{job_id}:{attempt}:{node}"


def stop_command_id(job_id: str, attempt: int, node: str, *, force: bool = False) -> str:
    """The id of the stop command of ``job_id``'s attempt on ``node``."""
    suffix = ":force" if force else ""
    return f"stop:{job_id}:{attempt}:{node}{suffix}"


def maintenance_command_id(campaign: str, node: str, attempt: int, step: str) -> str:
    """The id of one maintenance step of ``campaign`` on ``node``."""
    return f"maint:{campaign}:{node}:{attempt}:{step}"
