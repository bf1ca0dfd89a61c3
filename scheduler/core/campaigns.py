"""The maintenance campaign state machine (sans-IO): start, pace, act, check, pause, abort.

::

    campaign: PENDING --not_before--> RUNNING <--pause/resume--> PAUSED
              RUNNING --every host finished--> SUCCEEDED | FAILED (some host failed)
              RUNNING --deadline passed, nothing in flight--> FAILED (deadline_passed)
              any live state --abort--> ABORTED
    host:     WAITING --wave--> DRAINING --no job left--> IN_MAINTENANCE --action ok-->
              CHECKING --check ok--> DONE;  action or check failed --> FAILED

- **Pacing** is :func:`scheduler.core.waves.plan_wave` on every tick and after every campaign
  event: out of service counts every node that is not READY (other campaigns, drains, losses).
  This campaign's WAITING hosts that are out already (failed hosts retried after ``resume``)
  are taken at once, as they cost no capacity. Its FAILED hosts do not count against its budget
  hosts: ``--max-failures`` bounds those, and counting them would stall a campaign with a
  budget of one after its first failure, silently, instead of pausing it with the reason.
- **Draining** uses the node machine: the node goes DRAINING (reason
  ``maintenance:<campaign>``) and takes no new jobs; ``--busy wait`` waits for its jobs to end
  (they are recorded in ``jobs_waited``), and while it runs its WAITING hosts are held against
  new jobs that would still run when it reaches them (:mod:`scheduler.core.maintenance_hold`).
  ``--busy migrate`` asks them for a checkpoint and moves only their ranks on the draining
  hosts (:mod:`scheduler.core.campaign_moves`); a job that cannot or does not checkpoint is
  waited for (stopped with ``--force``).
- **Actions**: once the node is DRAINED the host goes IN_MAINTENANCE with one more attempt, and
  a :class:`~scheduler.core.actions.RunMaintenance` (step ``action``) goes to its agent; its
  report moves it to CHECKING and a second command (step ``check``) runs the health check
  (fast or deep). ``--external`` campaigns send no action: the host waits in IN_MAINTENANCE
  until ``maintenance done`` hands it back, then it is checked the same way.
- **Restart safety**: every phase change is persisted (``PersistChanges``) before the command
  it causes is sent. After a restart (``SchedulerStarted``) the commands of hosts still
  IN_MAINTENANCE or CHECKING are sent again with the same ``command_id`` (``maint:<campaign>:
  <host>:<attempt>:<step>``); the agent runs a command id once and answers a repeat with the
  stored result. A report of another attempt or step is ignored. So a host whose action
  finished is never acted on again, and no WAITING host is skipped (waiting is durable too).
- **Failures**: a failed host stays DRAINED with the reason on the node. After
  ``max_failures`` failed hosts the campaign pauses itself and says why; ``resume`` sends the
  failed hosts back to WAITING for another attempt.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from scheduler.core import campaign_moves
from scheduler.core.actions import RunMaintenance, maintenance_command_id
from scheduler.core.campaign_records import (
    IN_FLIGHT_PHASES,
    TERMINAL_CAMPAIGN_STATES,
    BusyPolicy,
    Campaign,
    CampaignHost,
    CampaignSpec,
    CampaignState,
    HostPhase,
)
from scheduler.core.context import Ctx
from scheduler.core.events import (
    CampaignControlRequested,
    CampaignStartRequested,
    MaintenanceReported,
)
from scheduler.core.records import Node
from scheduler.core.states import Health, NodeState
from scheduler.core.waves import Fleet, parse_budget, parse_per_domain, plan_wave
from topology.errors import FirsthopError, InvalidInputError
from topology.index import TopologyIndex

C = CampaignState
P = HostPhase
NAME_MAX = 64
OUTPUT_MAX = 4096
"""Bytes of an action's output kept in the campaign record (the tail)."""
LABELS = ("agent_version",)
"""Agent labels a selector may name (``label=value``)."""


class UnknownCampaignError(FirsthopError):
    """No campaign has that name."""

    status_code = "NOT_FOUND"
    default_reason = "unknown_campaign"


class CampaignExistsError(FirsthopError):
    """A different campaign already has that name."""

    status_code = "ALREADY_EXISTS"
    default_reason = "campaign_exists"


class CampaignStateError(FirsthopError):
    """The operation does not apply to the campaign in its state."""

    status_code = "FAILED_PRECONDITION"
    default_reason = "invalid_campaign_state"


def node_reason(name: str) -> str:
    """The reason a campaign writes on the nodes it drains."""
    return f"maintenance:{name}"


class CampaignBook:
    """Every campaign, and which changed during the current event."""

    def __init__(self, campaigns: Iterable[Campaign] = ()) -> None:
        self.all: dict[str, Campaign] = {c.name: c for c in campaigns}
        self._base: dict[str, int] = {}

    def put(self, campaign: Campaign) -> Campaign:
        """Store a new version (one version step per event, as for jobs)."""
        old = self.all.get(campaign.name)
        base = self._base.setdefault(campaign.name, old.version if old else 0)
        campaign = replace(campaign, version=base + 1)
        self.all[campaign.name] = campaign
        return campaign

    def take_changes(self) -> tuple[Campaign, ...]:
        """End an event: the campaigns to persist."""
        out = tuple(self.all[name] for name in self._base)
        self._base.clear()
        return out

    def get(self, name: str) -> Campaign:
        """The campaign called ``name`` or :class:`UnknownCampaignError`."""
        campaign = self.all.get(name)
        if campaign is None:
            raise UnknownCampaignError(f"no maintenance campaign named {name[:80]!r}")
        return campaign


# ---------------------------------------------------------------------- validation


def check_spec(spec: CampaignSpec, index: TopologyIndex) -> None:
    """Refuse a malformed campaign with a stable reason (nothing changes).

    Raises:
        InvalidInputError: ``invalid_campaign``, ``invalid_budget``, ``unknown_tier``.
    """
    name = spec.name
    if not name or len(name) > NAME_MAX or not all(c.isalnum() or c in "._-" for c in name):
        raise InvalidInputError(
            f"invalid campaign name {name[:80]!r} (letters, digits, '.', '_', '-')",
            reason="invalid_campaign",
        )
    if spec.external == bool(spec.command):
        raise InvalidInputError(
            "give either a command (-- COMMAND ARGS...) or --external, not both or neither",
            reason="invalid_campaign",
        )
    if spec.max_failures is not None and spec.max_failures < 1:
        raise InvalidInputError("--max-failures must be at least 1", reason="invalid_campaign")
    if not spec.timeout_s > 0:
        raise InvalidInputError("the action timeout must be positive", reason="invalid_campaign")
    if spec.not_before and spec.deadline and spec.deadline <= spec.not_before:
        raise InvalidInputError("--deadline must be after --not-before", reason="invalid_campaign")
    parse_budget(spec.max_unavailable)
    parse_per_domain(spec.per_domain, _tiers(index))


def _tiers(index: TopologyIndex) -> tuple[str, ...]:
    """Switch tiers between host and cluster, nearest first (``leaf``, ``pod``, ...)."""
    return tuple(index.level_names[1 : index.cluster_level])


def resolve_hosts(ctx: Ctx, index: TopologyIndex, selector: str) -> tuple[str, ...]:
    """The hosts a selector names, sorted.

    Raises:
        InvalidInputError: ``invalid_selector`` (unknown host, domain or label; empty result).
    """
    text = selector.strip()
    hosts: set[str]
    if text == "all":
        hosts = set(index.host_names)
    elif "=" in text:
        label, _, value = text.partition("=")
        label = label.strip()
        if label not in LABELS:
            raise InvalidInputError(
                f"unknown agent label {label[:40]!r} (labels: {', '.join(LABELS)})",
                reason="invalid_selector",
            )
        hosts = {n.name for n in ctx.state.nodes.values() if n.agent_version == value.strip()}
    else:
        hosts = set()
        for part in filter(None, (p.strip() for p in text.split(","))):
            if part in index.host_ids:
                hosts.add(part)
                continue
            found = False
            for level in range(1, index.num_levels):
                if part in index.domain_names[level]:
                    domain = index.domain_names[level].index(part)
                    hosts.update(index.host_names[int(h)] for h in index.hosts_under(level, domain))
                    found = True
                    break
            if not found:
                raise InvalidInputError(
                    f"{part[:80]!r} is neither a host nor a domain of the topology",
                    reason="invalid_selector",
                )
    if not hosts:
        raise InvalidInputError(f"selector {text[:80]!r} names no host", reason="invalid_selector")
    return tuple(sorted(hosts))


# ---------------------------------------------------------------------- handlers


def start(
    ctx: Ctx, book: CampaignBook, index: TopologyIndex, event: CampaignStartRequested
) -> None:
    """Create a campaign (a repeat of the same spec changes nothing).

    Raises:
        InvalidInputError; CampaignExistsError.
    """
    spec = event.spec
    check_spec(spec, index)
    old = book.all.get(spec.name)
    if old is not None:
        if old.spec == spec:
            return
        raise CampaignExistsError(f"a different campaign named {spec.name!r} exists")
    hosts = resolve_hosts(ctx, index, spec.selector)
    campaign = Campaign(
        spec=spec,
        state=C.PENDING,
        created_at=event.at,
        updated_at=event.at,
        hosts=tuple(CampaignHost(host=h, since=event.at) for h in hosts),
    )
    book.put(campaign)
    advance(ctx, book, index, spec.name, event.at)


def control(
    ctx: Ctx, book: CampaignBook, index: TopologyIndex, event: CampaignControlRequested
) -> None:
    """``pause``, ``resume`` or ``abort``.

    Raises:
        UnknownCampaignError; CampaignStateError; InvalidInputError (``invalid_operation``).
    """
    campaign = book.get(event.name)
    if campaign.state in TERMINAL_CAMPAIGN_STATES:
        raise CampaignStateError(f"campaign {campaign.name} is {campaign.state}")
    at = event.at
    if event.op == "pause":
        if campaign.state is C.PAUSED:
            return
        book.put(replace(campaign, state=C.PAUSED, reason=event.reason or "paused", updated_at=at))
    elif event.op == "resume":
        if campaign.state is not C.PAUSED:
            return
        hosts = tuple(
            replace(h, phase=P.WAITING, reason="retry after resume", since=at)
            if h.phase is P.FAILED
            else h
            for h in campaign.hosts
        )
        book.put(replace(campaign, state=C.RUNNING, reason="", hosts=hosts, updated_at=at))
        advance(ctx, book, index, campaign.name, at)
    elif event.op == "abort":
        kept: list[CampaignHost] = []
        for h in campaign.hosts:
            if h.phase is P.DRAINING:
                _return_node(ctx, campaign.name, h.host)
            kept.append(
                replace(h, phase=P.WAITING, reason="aborted", since=at)
                if h.phase is P.DRAINING
                else h
            )
        book.put(
            replace(
                campaign,
                state=C.ABORTED,
                reason=event.reason or "aborted",
                hosts=tuple(kept),
                updated_at=at,
            )
        )
    else:
        raise InvalidInputError(
            f"unknown campaign operation {event.op[:40]!r} (pause, resume, abort)",
            reason="invalid_operation",
        )


def reported(
    ctx: Ctx, book: CampaignBook, index: TopologyIndex, event: MaintenanceReported
) -> None:
    """An agent's (or, for ``--external``, the operator's) report on one host.

    Raises:
        UnknownCampaignError; CampaignStateError for an external hand-back of a host that is
        not handed over. Stale agent reports (another attempt or step) are ignored.
    """
    campaign = book.get(event.campaign)
    entry = campaign.host(event.node)
    external = event.step == "external"
    if entry is None:
        if external:
            raise CampaignStateError(f"host {event.node} is not part of campaign {campaign.name}")
        return
    attempt = entry.attempts if event.attempt is None else event.attempt
    expected = P.CHECKING if event.step == "check" else P.IN_MAINTENANCE
    if external and not (campaign.spec.external and entry.phase is P.IN_MAINTENANCE):
        raise CampaignStateError(
            f"host {event.node} is {entry.phase} in campaign {campaign.name}, not handed over"
        )
    if attempt != entry.attempts or entry.phase is not expected:
        return
    at = event.at
    output = event.output[-OUTPUT_MAX:] if event.output else entry.output
    if not event.ok:
        label = {"action": "action_failed", "check": "health_check_failed"}.get(
            event.step, "external_failed"
        )
        reason = f"{label}: {event.detail}" if event.detail else label
        _put_host(
            book,
            campaign,
            replace(entry, phase=P.FAILED, reason=reason, since=at, output=output),
            at,
        )
        _mark_node_failed(ctx, campaign.name, event.node, reason)
    elif event.step == "check":
        _put_host(book, campaign, replace(entry, phase=P.DONE, reason="", since=at), at)
        _return_node(ctx, campaign.name, event.node)
    else:
        entry = replace(entry, phase=P.CHECKING, reason="", since=at, output=output)
        _put_host(book, campaign, entry, at)
        _send(ctx, book.all[campaign.name], entry, "check")
    advance(ctx, book, index, campaign.name, at)


def tick(ctx: Ctx, book: CampaignBook, index: TopologyIndex, at: datetime) -> None:
    """Move every live campaign along (timer)."""
    for name in sorted(book.all):
        if book.all[name].state not in TERMINAL_CAMPAIGN_STATES:
            advance(ctx, book, index, name, at)


def resend(ctx: Ctx, book: CampaignBook) -> None:
    """After a restart: send again the commands of hosts in the middle of a step."""
    for name in sorted(book.all):
        campaign = book.all[name]
        for entry in campaign.hosts:
            if entry.phase is P.IN_MAINTENANCE and not campaign.spec.external:
                _send(ctx, campaign, entry, "action")
            elif entry.phase is P.CHECKING:
                _send(ctx, campaign, entry, "check")


# ---------------------------------------------------------------------- progress


def advance(ctx: Ctx, book: CampaignBook, index: TopologyIndex, name: str, at: datetime) -> None:
    """Drained hosts start their step; then a new wave if the campaign may take one."""
    campaign = book.all[name]
    if campaign.state is C.PENDING:
        if campaign.spec.not_before is not None and at < campaign.spec.not_before:
            return
        campaign = book.put(replace(campaign, state=C.RUNNING, updated_at=at))
    campaign = _move_jobs(ctx, book, campaign, at)
    campaign = _start_drained(ctx, book, campaign, at)
    campaign = _check_failures(book, campaign, at)
    if campaign.state is not C.RUNNING:
        return
    deadline = campaign.spec.deadline
    if deadline is None or at < deadline:
        campaign = _take_wave(ctx, book, index, campaign, at)
    _maybe_finish(book, campaign, at)


def _move_jobs(ctx: Ctx, book: CampaignBook, campaign: Campaign, at: datetime) -> Campaign:
    """``--busy migrate``: move (or wait for) the jobs on draining hosts."""
    moved = campaign_moves.step(ctx, campaign, at)
    return campaign if moved is campaign else book.put(moved)


def _start_drained(ctx: Ctx, book: CampaignBook, campaign: Campaign, at: datetime) -> Campaign:
    state = ctx.state
    changed = False
    hosts = []
    for old in campaign.hosts:
        entry = old
        if entry.phase is P.DRAINING:
            node = state.nodes.get(entry.host)
            if node is not None and node.state is NodeState.DRAINED:
                entry = replace(
                    entry,
                    phase=P.IN_MAINTENANCE,
                    attempts=entry.attempts + 1,
                    since=at,
                    reason="handed over" if campaign.spec.external else "",
                )
                changed = True
                if not campaign.spec.external:
                    _send(ctx, campaign, entry, "action")
            elif node is not None and node.state is NodeState.READY:
                # Returned to service behind the campaign's back: drain it again.
                _drain(ctx, campaign.name, entry.host)
                changed = True
        hosts.append(entry)
    if not changed:
        return campaign
    return book.put(replace(campaign, hosts=tuple(hosts), updated_at=at))


def _check_failures(book: CampaignBook, campaign: Campaign, at: datetime) -> Campaign:
    limit = campaign.spec.max_failures
    if limit is None or campaign.state is not C.RUNNING:
        return campaign
    failed = [h.host for h in campaign.hosts if h.phase is P.FAILED]
    if len(failed) < limit:
        return campaign
    shown = ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else "")
    reason = f"max_failures: {len(failed)} hosts failed ({shown}); fix and resume, or abort"
    return book.put(replace(campaign, state=C.PAUSED, reason=reason, updated_at=at))


def _take_wave(
    ctx: Ctx, book: CampaignBook, index: TopologyIndex, campaign: Campaign, at: datetime
) -> Campaign:
    state = ctx.state
    waiting = [h.host for h in campaign.hosts if h.phase is P.WAITING]
    if not waiting:
        return campaign
    usable = {
        h
        for h in waiting
        if (n := state.nodes.get(h)) is not None
        and n.registered_at is not None
        and n.state in (NodeState.READY, NodeState.DRAINING, NodeState.DRAINED)
    }
    campaign = _note_unusable(book, campaign, usable, state.nodes, at)
    # Own WAITING hosts already out of service (failed ones retried after resume) cost no
    # capacity: take them at once; they count as out for everything else.
    already = {h for h in usable if state.nodes[h].state is not NodeState.READY}
    usable -= already
    # Own hosts the planner may pick are counted when picked, not before; own hosts it cannot
    # pick (lost, never registered) are out like any other.
    own = usable | {h.host for h in campaign.hosts if h.phase is P.FAILED}
    out = frozenset(
        n.name
        for n in state.nodes.values()
        if n.name not in own
        and not (n.state is NodeState.READY and n.health in (Health.HEALTHY, Health.UNKNOWN))
    )
    fleet = Fleet(
        domains=_domains(index),
        out_of_service=out,
        jobs={h: frozenset(jobs) for h, jobs in state.host_jobs.items() if jobs},
    )
    wave = plan_wave(
        sorted(usable),
        fleet,
        max_unavailable=parse_budget(campaign.spec.max_unavailable),
        per_domain=parse_per_domain(campaign.spec.per_domain, _tiers(index)),
    )
    chosen = set(wave.hosts) | already
    if not chosen:
        return campaign
    migrate = campaign.spec.busy is BusyPolicy.MIGRATE
    waited = dict.fromkeys(campaign.jobs_waited)
    hosts = []
    for old in campaign.hosts:
        entry = old
        if entry.host in chosen:
            if not migrate:
                for job in sorted(state.host_jobs.get(entry.host, ())):
                    waited.setdefault(job)
            _drain(ctx, campaign.name, entry.host)
            busy = bool(state.host_jobs.get(entry.host))
            entry = replace(
                entry,
                phase=P.DRAINING,
                since=at,
                reason="waiting for running jobs to end" if busy else "",
            )
        hosts.append(entry)
    campaign = replace(campaign, hosts=tuple(hosts), jobs_waited=tuple(waited), updated_at=at)
    campaign = book.put(campaign)
    # Busy hosts of a migrate campaign ask their jobs to move now; idle hosts are DRAINED at
    # once: start their step in the same event.
    campaign = _move_jobs(ctx, book, campaign, at)
    return _start_drained(ctx, book, campaign, at)


UNUSABLE = "node not in service: "


def _note_unusable(
    book: CampaignBook,
    campaign: Campaign,
    usable: set[str],
    nodes: Mapping[str, Node],
    at: datetime,
) -> Campaign:
    """Say in status why a WAITING host cannot be taken (never registered, lost)."""
    changed = False
    hosts = []
    for old in campaign.hosts:
        entry = old
        if entry.phase is P.WAITING:
            node = nodes.get(entry.host)
            if entry.host in usable:
                reason = "" if entry.reason.startswith(UNUSABLE) else entry.reason
            else:
                reason = UNUSABLE + (node.state.value if node is not None else "unknown")
            if reason != entry.reason:
                entry = replace(entry, reason=reason)
                changed = True
        hosts.append(entry)
    if not changed:
        return campaign
    return book.put(replace(campaign, hosts=tuple(hosts), updated_at=at))


def _maybe_finish(book: CampaignBook, campaign: Campaign, at: datetime) -> None:
    if any(h.phase in IN_FLIGHT_PHASES for h in campaign.hosts):
        return
    waiting = campaign.count(P.WAITING)
    failed = campaign.count(P.FAILED)
    if waiting:
        deadline = campaign.spec.deadline
        if deadline is not None and at >= deadline:
            book.put(
                replace(
                    campaign,
                    state=C.FAILED,
                    updated_at=at,
                    reason=f"deadline_passed: {waiting} hosts not done",
                )
            )
        return
    if failed:
        book.put(replace(campaign, state=C.FAILED, reason=f"{failed} hosts failed", updated_at=at))
    else:
        book.put(replace(campaign, state=C.SUCCEEDED, reason="", updated_at=at))


# ---------------------------------------------------------------------- helpers


def _domains(index: TopologyIndex) -> dict[str, dict[str, str]]:
    tiers = _tiers(index)
    out: dict[str, dict[str, str]] = {}
    for h, host in enumerate(index.host_names):
        ancestors = index.ancestors_of(h)
        out[host] = {
            tier: index.domain_names[level][int(ancestors[level])]
            for level, tier in enumerate(tiers, start=1)
        }
    return out


def _put_host(book: CampaignBook, campaign: Campaign, entry: CampaignHost, at: datetime) -> None:
    hosts = tuple(entry if h.host == entry.host else h for h in campaign.hosts)
    book.put(replace(campaign, hosts=hosts, updated_at=at))


def _send(ctx: Ctx, campaign: Campaign, entry: CampaignHost, step: str) -> None:
    spec = campaign.spec
    ctx.out.maintenance.append(
        RunMaintenance(
            command_id=maintenance_command_id(spec.name, entry.host, entry.attempts, step),
            campaign=spec.name,
            node=entry.host,
            attempt=entry.attempts,
            step=step,
            argv=spec.command if step == "action" else (),
            timeout_s=spec.timeout_s,
            health_check=spec.health_check.value,
        )
    )


def _drain(ctx: Ctx, name: str, host: str) -> None:
    state = ctx.state
    node = state.nodes[host]
    reason = node_reason(name)
    if node.state is NodeState.READY:
        dst = NodeState.DRAINING if state.host_jobs.get(host) else NodeState.DRAINED
        state.move_node(node, dst, reason)
    elif node.reason != reason and node.state in (NodeState.DRAINING, NodeState.DRAINED):
        state.put_node(replace(node, reason=reason))
    ctx.settle_drains([host])


def _return_node(ctx: Ctx, name: str, host: str) -> None:
    """Back to service, if the node is still drained by this campaign."""
    state = ctx.state
    node = state.nodes.get(host)
    if node is None or node.state not in (NodeState.DRAINING, NodeState.DRAINED):
        return
    if not node.reason.startswith(node_reason(name)):
        return
    health = Health.UNKNOWN if node.health is Health.FAILED else node.health
    state.move_node(
        node, NodeState.READY, f"maintenance {name} done", updated=replace(node, health=health)
    )


def _mark_node_failed(ctx: Ctx, name: str, host: str, reason: str) -> None:
    state = ctx.state
    node = state.nodes.get(host)
    if node is not None and node.state in (NodeState.DRAINING, NodeState.DRAINED):
        state.put_node(replace(node, reason=f"{node_reason(name)}: {reason}"))
