"""Read-only queries over the live state: filtered, paginated job and node listings.

Pages are cut by an opaque token naming the last item of the previous page (jobs: submit
time and id; nodes: position in topology order), so a page is stable while jobs are added.
A token this server did not hand out is ``invalid_page_token``.

Must not import grpc, generated protos, ``scheduler.api`` or ``scheduler.store``.
"""

from __future__ import annotations

import base64
import binascii
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
) -> Page[Job]:
    """Jobs matching the filters, oldest submission first (then by id), one page.

    With ``size_of`` and ``max_bytes``, the page also ends before the item that would take
    its total size over ``max_bytes`` (it always holds at least one item).
    """
    size = min(page_size or DEFAULT_JOB_PAGE, MAX_JOB_PAGE)
    wanted = frozenset(states)
    matching = sorted(
        (
            job
            for job in state.jobs.values()
            if (not wanted or job.state in wanted)
            and (not queue or job.queue == queue)
            and (not user or job.user == user)
        ),
        key=lambda j: (j.submitted_at, j.id),
    )
    start = 0
    if page_token:
        after = _job_key(page_token)
        start = next(
            (i for i, j in enumerate(matching) if (j.submitted_at, j.id) > after), len(matching)
        )
    items = _cut(tuple(matching[start : start + size]), size_of, max_bytes)
    more = start + len(items) < len(matching)
    token = ""
    if more and items:
        last = items[-1]
        token = _encode(f"j|{last.submitted_at.isoformat()}|{last.id}")
    return Page(items, token, len(matching))


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
