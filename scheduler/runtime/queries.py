"""Read-only queries over the live state: filtered, paginated job and node listings.

Pages are cut by an opaque token naming the last item of the previous page (jobs: submit
time and id; nodes: position in topology order), so a page is stable while jobs are added.
A token this server did not hand out is ``invalid_page_token``.

Job listings are ordered by submission time, then id. A :class:`JobOrder` keeps that order
between listings (a job's submission time never changes), so a listing finds its page by
bisection instead of sorting every job each time: a flood of list calls (issue 10) must not
spend the event loop sorting.

Must not import grpc, generated protos, ``scheduler.api`` or ``scheduler.store``.
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_right
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, TypeVar

from firsthop.reasons import ErrorReason
from scheduler.core.records import Job, Node
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState, NodeState
from topology.errors import InvalidInputError

T = TypeVar("T")

DEFAULT_JOB_PAGE: Final = 100
MAX_JOB_PAGE: Final = 1000
DEFAULT_NODE_PAGE: Final = 1000
MAX_NODE_PAGE: Final = 10_000


class InvalidPageTokenError(InvalidInputError):
    """A page token this server did not hand out."""

    default_reason = ErrorReason.INVALID_PAGE_TOKEN


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing."""

    items: tuple[T, ...]
    next_token: str
    total: int


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidPageTokenError(f"page token {token!r} is not valid") from None


class JobOrder:
    """The jobs of a state in listing order (submission time, then id), kept between
    listings.

    The order is brought up to date when the job ids of the state are not the ones it was
    built from, in the same order (a list comparison, in C, that finds the same string objects):
    the ids that left are dropped and the new ones merged in, which costs a pass over the ids,
    not a sort of every job. A state rebuilt from scratch starts a new order.
    """

    def __init__(self) -> None:
        self._state: SchedulerState | None = None
        self._ids: list[str] = []
        self._keys: list[tuple[datetime, str]] = []

    def keys(self, state: SchedulerState) -> list[tuple[datetime, str]]:
        """``(submitted_at, id)`` of every job of ``state``, in order (do not modify)."""
        if state is not self._state:
            self._state, self._ids, self._keys = state, [], []
        ids = list(state.jobs)
        if ids != self._ids:
            self._refresh(state.jobs, ids)
        return self._keys

    def _refresh(self, jobs: dict[str, Job], ids: list[str]) -> None:
        now, before = set(ids), set(self._ids)
        gone = before - now
        keys = [k for k in self._keys if k[1] not in gone] if gone else list(self._keys)
        added = sorted((jobs[i].submitted_at, i) for i in now - before)
        if added and keys and added[0] < keys[-1]:
            keys.extend(added)
            keys.sort()  # two sorted runs: merged in one pass
        else:
            keys.extend(added)
        self._keys = keys
        self._ids = ids


def list_jobs(
    state: SchedulerState,
    *,
    states: Collection[JobState] = (),
    queue: str = "",
    user: str = "",
    page_size: int = 0,
    page_token: str = "",
    size_of: Callable[[Job], int] | None = None,
    max_bytes: int = 0,
    order: JobOrder | None = None,
) -> Page[Job]:
    """Jobs matching the filters, oldest submission first (then by id), one page.

    With ``size_of`` and ``max_bytes``, the page also ends before the item that would take
    its total size over ``max_bytes`` (it always holds at least one item). ``order`` is the
    order kept from earlier listings of the same state (without it, every job is sorted).
    """
    size = min(page_size or DEFAULT_JOB_PAGE, MAX_JOB_PAGE)
    after = _job_key(page_token) if page_token else None
    keys = (order or JobOrder()).keys(state)
    start = 0 if after is None else bisect_right(keys, after)
    jobs = state.jobs
    wanted = frozenset(states)
    page: list[Job] = []
    if not wanted and not queue and not user:
        total = len(keys)
        left = total - start
        page = [jobs[job_id] for _, job_id in keys[start : start + size]]
    else:
        total = left = 0
        for i, (_, job_id) in enumerate(keys):
            job = jobs[job_id]
            if (
                (not wanted or job.state in wanted)
                and (not queue or job.queue == queue)
                and (not user or job.user == user)
            ):
                total += 1
                if i >= start:
                    left += 1
                    if len(page) < size:
                        page.append(job)
    items = _cut(tuple(page), size_of, max_bytes)
    token = ""
    if left > len(items) and items:
        last = items[-1]
        token = _encode(f"j|{last.submitted_at.isoformat()}|{last.id}")
    return Page(items, token, total)


def _job_key(token: str) -> tuple[datetime, str]:
    parts = _decode(token).split("|", 2)
    if len(parts) != 3 or parts[0] != "j":
        raise InvalidPageTokenError(f"page token {token!r} is not a job page token")
    try:
        at = datetime.fromisoformat(parts[1])
    except ValueError:
        raise InvalidPageTokenError(f"page token {token!r} is not valid") from None
    if at.tzinfo is None:
        raise InvalidPageTokenError(f"page token {token!r} is not valid")
    return at, parts[2]


def list_nodes(
    state: SchedulerState,
    *,
    states: Collection[NodeState] = (),
    page_size: int = 0,
    page_token: str = "",
    size_of: Callable[[Node], int] | None = None,
    max_bytes: int = 0,
) -> Page[Node]:
    """Nodes in topology order (in the states given), one page (cut by size as
    :func:`list_jobs` is)."""
    size = min(page_size or DEFAULT_NODE_PAGE, MAX_NODE_PAGE)
    wanted = frozenset(states)
    names = state.index.host_names
    start = 0
    if page_token:
        text = _decode(page_token)
        kind, _, offset = text.partition("|")
        if kind != "n" or not offset.isdigit():
            raise InvalidPageTokenError(f"page token {page_token!r} is not a node page token")
        start = int(offset)
    matching = [
        (i, state.nodes[name])
        for i, name in enumerate(names)
        if not wanted or state.nodes[name].state in wanted
    ]
    page = [(i, node) for i, node in matching if i >= start][:size]
    if size_of is not None:
        kept = _cut(tuple(node for _, node in page), size_of, max_bytes)
        page = page[: len(kept)]
    token = ""
    if page and page[-1][0] < matching[-1][0]:
        token = _encode(f"n|{page[-1][0] + 1}")
    return Page(tuple(node for _, node in page), token, len(matching))


def _cut(items: tuple[T, ...], size_of: Callable[[T], int] | None, max_bytes: int) -> tuple[T, ...]:
    """The longest prefix of ``items`` (at least one) whose sizes add up to ``max_bytes``."""
    if size_of is None or max_bytes <= 0:
        return items
    total = 0
    for i, item in enumerate(items):
        total += size_of(item)
        if total > max_bytes and i > 0:
            return items[:i]
    return items


def node_usage(state: SchedulerState, name: str) -> tuple[int, tuple[str, ...]]:
    """GPUs held on a node and the ids of the jobs holding them."""
    jobs = state.jobs_on(name)
    gpus = sum(len(j.allocation.gpus_on(name)) for j in jobs if j.allocation is not None)
    return gpus, tuple(j.id for j in jobs)
