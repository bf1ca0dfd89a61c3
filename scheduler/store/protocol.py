"""The storage protocol: what the scheduler needs from a durable store.

Two implementations, one contract (``tests/store/test_store_contract.py``):
:class:`~scheduler.store.memory.MemoryStore` (tests, simulator, benchmark baseline) and
:class:`~scheduler.store.sql.SqlStore` (SQLite embedded, PostgreSQL in production).

Semantics every implementation keeps:

- :meth:`Store.save` applies one :class:`~scheduler.core.actions.ChangeSet` atomically and
  durably: when it returns, every record in it survives a crash of the process; when it
  raises, none was written.
- Optimistic versioning: a record is written only if the stored version is lower than the
  record's (or it is new). Otherwise :class:`VersionConflictError` (``version_conflict``) and
  nothing is written: another writer (a second scheduler, a stale leader) got there first.
- :meth:`Store.load` returns everything (the scheduler keeps its state in memory);
  :meth:`Store.get_job` / :meth:`Store.list_jobs` serve reads that need not go through it.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from scheduler.core.actions import ChangeSet
from scheduler.core.campaign_records import Campaign
from scheduler.core.records import Job, Node, Queue
from scheduler.core.states import JobState
from topology.errors import FirsthopError, InvalidInputError

MAX_PAGE = 1000


class StoreError(FirsthopError):
    """The store cannot be used (unreachable, corrupt, wrong schema)."""

    status_code = "UNAVAILABLE"
    default_reason = "store_unavailable"


class StoreLockedError(StoreError):
    """Another scheduler holds the store (a second one must not run on it)."""

    status_code = "FAILED_PRECONDITION"
    default_reason = "store_locked"


class VersionConflictError(FirsthopError):
    """A record in the store is as new as or newer than the one being saved."""

    status_code = "ABORTED"
    default_reason = "version_conflict"


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything a store holds."""

    jobs: tuple[Job, ...]
    nodes: tuple[Node, ...]
    queues: tuple[Queue, ...]
    campaigns: tuple[Campaign, ...] = ()
    """Maintenance campaigns, by name."""


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of :meth:`Store.list_jobs`; ``next_page_token`` is ``None`` on the last."""

    jobs: tuple[Job, ...]
    next_page_token: str | None


class Store(Protocol):
    """A durable home for jobs, nodes and queues (see the module docstring)."""

    def load(self, *, finished_after: datetime | None = None) -> StoredState:
        """Every stored record; with ``finished_after``, jobs that finished before it are left
        out (nodes and queues are always all there), so loading costs what is live, not the
        length of the history."""
        ...

    def job_for_submission(self, user: str, submission_id: str) -> Job | None:
        """The job ``user`` submitted with ``submission_id``, or ``None``."""
        ...

    def has_finished_before(self, at: datetime) -> bool:
        """Whether a stored job finished before ``at`` (what a ``load(finished_after=at)``
        left out)."""
        ...

    def count_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
    ) -> int:
        """How many jobs :meth:`list_jobs` would list over all its pages."""
        ...

    def save(self, changes: ChangeSet) -> None:
        """Write ``changes`` atomically and durably.

        Raises:
            VersionConflictError: a stored record is not older than its replacement.
            DuplicateSubmissionError: two jobs with one (user, submission id).
        """
        ...

    def get_job(self, job_id: str) -> Job | None:
        """The stored job, or ``None``."""
        ...

    def list_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> JobPage:
        """Jobs in submission order (then id), filtered, one page at a time.

        Raises:
            InvalidInputError: ``invalid_page_token`` or ``invalid_page_size``.
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def encode_page_token(job: Job) -> str:
    """The token that resumes a listing after ``job``."""
    raw = f"{job.submitted_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(token: str) -> tuple[datetime, str]:
    """``(submitted_at, id)`` of the last job of the previous page."""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        stamp, _, job_id = text.partition("|")
        at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInputError(
            f"invalid page token {token!r}", reason="invalid_page_token"
        ) from None
    if not job_id or at.tzinfo is None:
        raise InvalidInputError(f"invalid page token {token!r}", reason="invalid_page_token")
    return at, job_id


def check_limit(limit: int) -> None:
    """Validate a page size."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(
            f"page size must be 1..{MAX_PAGE}, not {limit}", reason="invalid_page_size"
        )
