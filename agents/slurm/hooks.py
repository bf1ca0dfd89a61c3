"""What each Slurm hook does, as functions of (configuration, environment) -> exit code.

- :func:`prolog_ctld` (``PrologSlurmctld``, on the controller, at allocation): reads the
  job's firsthop comment, computes the rank table within the allocated nodes
  (:mod:`agents.slurm.ctld`) and publishes it (state directory, or the scheduler with
  ``--server``). A bad comment or an impossible shape exits :data:`EXIT_REJECT` with the
  reason in the job's AdminComment (Slurm requeues a batch job and kills an interactive one;
  fix the comment with ``scontrol update jobid=N comment=...`` and the requeued job retries).
- :func:`prolog` (``Prolog``, each node, root, with ``PrologFlags=Alloc``): the fast health
  check; FAILED drains the node with ``reason="firsthop: <code>: ..."`` and exits
  :data:`EXIT_REJECT` (Slurm requeues the job; the drained node is not picked again), SUSPECT
  logs and goes on. Then it copies this node's slice of the table to the node-local directory.
- :func:`epilog` (``Epilog``, each node): removes the local slice; with ``epilog_check``
  runs the check again and drains a node whose GPUs broke during the job (exit 0: the job
  itself finished). Where there is no slice the job never ran on the node (Slurm runs the
  Epilog after a failed Prolog too), so there is nothing to check.
- :func:`epilog_ctld` (``EpilogSlurmctld``): removes the job's published table.

Jobs without the comment are left alone: every hook returns 0 before doing anything. Errors
of firsthop itself (unreadable state, missing topology, unreachable server) are *outages*:
:class:`OutageError` is raised and the caller applies the configured fail mode. Every action
writes one line through the injected ``log``.

Must not import ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agents.slurm import state
from agents.slurm.comment import CommentError, parse_comment
from agents.slurm.config import HookConfig
from agents.slurm.errors import OutageError
from agents.slurm.slurmcmd import CommandRunner, SubprocessRunner, drain, set_admin_comment

if TYPE_CHECKING:
    from topology.model import Topology

EXIT_OK = 0
EXIT_REJECT = 1
"""The job must not run here (bad comment, impossible shape, FAILED node)."""
EXIT_OUTAGE = 2
"""firsthop itself failed and the fail mode is ``closed``."""

LogFn = Callable[[str], None]


class TablePublisher(Protocol):
    """Where PrologSlurmctld puts a table and the Prolog finds its slice."""

    def publish(self, table: state.JobTable) -> str:
        """Store the table; return where (for the log)."""
        ...

    def fetch_slice(self, job_id: str, node: str) -> str | None:
        """The node's slice text, ``None`` when the job has no table."""
        ...

    def remove(self, job_id: str) -> bool:
        """Forget the job's table; whether there was one."""
        ...


@dataclass(frozen=True)
class StateDirPublisher:
    """State-directory mode: a directory every compute node can read."""

    state_dir: Path

    def publish(self, table: state.JobTable) -> str:
        return str(state.publish(self.state_dir, table))

    def fetch_slice(self, job_id: str, node: str) -> str | None:
        return state.read_host_slice(self.state_dir, job_id, node)

    def remove(self, job_id: str) -> bool:
        return state.remove_job(self.state_dir, job_id)


@dataclass
class HookContext:
    """What a hook runs with.

    Attributes:
        config: the installed configuration.
        env: the hook's environment (what Slurm gave it).
        log: writes one line.
        runner: runs Slurm commands.
        publisher: the table store: the scheduler's SlurmService when the configuration names
            a server, else the state directory.
    """

    config: HookConfig
    env: Mapping[str, str]
    log: LogFn
    runner: CommandRunner = field(default_factory=SubprocessRunner)
    publisher: TablePublisher | None = None

    def store(self) -> TablePublisher:
        """The table store of this configuration."""
        if self.publisher is None:
            if self.config.server:
                from agents.slurm.remote import ServerPublisher
                from agents.tls import AgentTls

                files = self.config.tls_files()
                tls = None if files is None else AgentTls(*(Path(f) for f in files))
                self.publisher = ServerPublisher(self.config.server, tls=tls)
            else:
                self.publisher = StateDirPublisher(Path(self.config.state_dir))
        return self.publisher


def _comment(ctx: HookContext) -> str | None:
    return ctx.env.get("SLURM_JOB_COMMENT")


def prolog_ctld(ctx: HookContext) -> int:
    """PrologSlurmctld: compute and publish the job's rank table (see the module docstring)."""
    job = ctx.env.get("SLURM_JOB_ID", "")
    try:
        shape = parse_comment(_comment(ctx))
    except CommentError as exc:
        return _reject(ctx, job, exc.reason, str(exc))
    if shape is None:
        return EXIT_OK
    nodelist = ctx.env.get("SLURM_JOB_NODELIST", "")
    from topology.errors import FirsthopError
    from topology.hostlist import expand_hostlist

    try:
        nodes = expand_hostlist(nodelist)
    except FirsthopError as exc:
        return _reject(ctx, job, exc.reason, exc.message)
    topology = _load_topology(ctx.config.topology)
    from agents.slurm.ctld import ShapeError, allocation_table

    try:
        computed = allocation_table(
            topology,
            job,
            nodes,
            shape,
            port_base=ctx.config.master_port_base,
            port_span=ctx.config.master_port_span,
        )
    except ShapeError as exc:
        return _reject(ctx, job, exc.reason, exc.message)
    try:
        where = ctx.store().publish(computed.table)
    except OSError as exc:
        raise OutageError("publish_failed", str(exc)) from exc
    meta = computed.table.meta
    ctx.log(
        f"prolog-ctld job={job} action=publish nodes={_short(nodelist)} "
        f"world={meta['world_size']} order={_short(','.join(meta['node_order']))} "
        f"cost_ms={computed.cost_ms:.3f} "
        f"slurm_order_cost_ms={computed.slurm_order_cost_ms:.3f} "
        f"solve_s={computed.solve_seconds:.3f} to={where}"
    )
    return EXIT_OK


def _short(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for a log line (a 2,048-node order is 16 KB)."""
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


def _reject(ctx: HookContext, job: str, reason: str, message: str) -> int:
    """Log a rejection, put it in the job's AdminComment, and fail the hook.

    Slurm 22.05 keeps no output of a PrologSlurmctld, so the job's AdminComment is where its
    owner sees why it went back to the queue (``scontrol show job``). Best effort: one
    ``scontrol`` call with a short timeout, on rejections only.
    """
    ctx.log(f"prolog-ctld job={job} action=reject reason={reason}: {message}")
    done = set_admin_comment(
        ctx.runner,
        scontrol=ctx.config.scontrol,
        slurm_conf=_slurm_conf(ctx),
        job_id=job,
        text=f"firsthop: {reason}: {message}",
    )
    if done.returncode != 0:
        ctx.log(f"prolog-ctld job={job} action=admincomment_failed {done.stderr.strip()[:200]}")
    return EXIT_REJECT


def _load_topology(path: str) -> Topology:
    from topology.errors import FirsthopError
    from topology.model import Topology

    try:
        return Topology.load(Path(path))
    except (OSError, FirsthopError) as exc:
        raise OutageError("topology_unavailable", f"{path}: {exc}") from exc


def prolog(ctx: HookContext) -> int:
    """Prolog: health gate, then this node's slice to the local directory."""
    job = ctx.env.get("SLURM_JOB_ID", "")
    node = ctx.env.get("SLURMD_NODENAME", "")
    try:
        if parse_comment(_comment(ctx)) is None:
            return EXIT_OK
    except CommentError:
        return EXIT_OK  # PrologSlurmctld rejects it; nothing to do on the node
    if not _healthy_or_drained(ctx, job, node, poll=1, when="before"):
        return EXIT_REJECT
    try:
        text = ctx.store().fetch_slice(job, node)
    except (OSError, state.SliceError) as exc:
        raise OutageError("state_unavailable", str(exc)) from exc
    if text is None:
        raise OutageError("no_rank_table", f"no rank table published for job {job} on {node}")
    path = state.write_local_slice(Path(ctx.config.local_dir), node, job, text)
    ctx.log(f"prolog job={job} node={node} action=slice to={path}")
    return EXIT_OK


def _healthy_or_drained(ctx: HookContext, job: str, node: str, *, poll: int, when: str) -> bool:
    """Run the fast check; drain the node and return False when it is FAILED."""
    from agents.health.errors import HealthProbeError
    from agents.health.verdict import Health
    from agents.slurm.health import fast_check, summary
    from topology.errors import InvalidInputError

    hook = "prolog" if poll == 1 else "epilog"
    try:
        result = fast_check(
            Path(ctx.config.state_dir),
            node,
            poll=poll,
            checkpoint_path=Path(ctx.config.checkpoint_path),
        )
    except (HealthProbeError, InvalidInputError) as exc:
        raise OutageError(exc.reason, f"health check on {node}: {exc.message}") from exc
    line = summary(result)
    if result.health is Health.FAILED:
        reason = f"firsthop: {line}" if when == "before" else f"firsthop: after job {job}: {line}"
        done = drain(
            ctx.runner,
            scontrol=ctx.config.scontrol,
            slurm_conf=_slurm_conf(ctx),
            node=node,
            reason=reason,
        )
        status = "drained" if done.returncode == 0 else f"drain_failed({done.stderr.strip()})"
        ctx.log(f"{hook} job={job} node={node} action={status} health=FAILED {line}")
        return False
    if result.health is Health.SUSPECT:
        ctx.log(f"{hook} job={job} node={node} action=continue health=SUSPECT {line}")
    return True


def _slurm_conf(ctx: HookContext) -> str:
    return ctx.env.get("SLURM_CONF") or ctx.config.slurm_conf


def epilog(ctx: HookContext) -> int:
    """Epilog: drop the local slice; optionally drain a node whose GPUs broke during the job."""
    job = ctx.env.get("SLURM_JOB_ID", "")
    node = ctx.env.get("SLURMD_NODENAME", "")
    try:
        if parse_comment(_comment(ctx)) is None:
            return EXIT_OK
    except CommentError:
        return EXIT_OK
    if not state.remove_local_slice(Path(ctx.config.local_dir), node, job):
        # No slice: the job never ran here (its Prolog failed, and drained the node with the
        # reason that matters, or failed open). Slurm runs the Epilog anyway.
        return EXIT_OK
    ctx.log(f"epilog job={job} node={node} action=remove_slice")
    if ctx.config.epilog_check:
        _healthy_or_drained(ctx, job, node, poll=2, when="after")
    return EXIT_OK


def epilog_ctld(ctx: HookContext) -> int:
    """EpilogSlurmctld: remove the job's published table."""
    job = ctx.env.get("SLURM_JOB_ID", "")
    try:
        if parse_comment(_comment(ctx)) is None:
            return EXIT_OK
    except CommentError:
        return EXIT_OK
    try:
        removed = ctx.store().remove(job)
    except OSError as exc:
        raise OutageError("state_unavailable", str(exc)) from exc
    if removed:
        ctx.log(f"epilog-ctld job={job} action=remove_table")
    return EXIT_OK


HOOKS: Mapping[str, Callable[[HookContext], int]] = {
    "prolog-ctld": prolog_ctld,
    "prolog": prolog,
    "epilog": epilog,
    "epilog-ctld": epilog_ctld,
}
