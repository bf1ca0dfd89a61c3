"""``SqlStore``: the storage protocol on SQLite or PostgreSQL through SQLAlchemy 2 Core.

One code path serves both; only the upsert construct is taken from the dialect (both offer
``INSERT ... ON CONFLICT DO UPDATE ... WHERE``). Opening a store runs the Alembic migrations
up to the newest revision (:func:`migrate`).

URLs:

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the embedded default);
- ``postgresql+psycopg://user:password@host:5432/dbname`` (psycopg 3). An operator creates
  the database and a role that owns it (``createdb -O firsthop firsthop``), then points
  ``--db`` at it; the schema is created and upgraded by the scheduler itself.

Durability. :meth:`SqlStore.save` returns only after the transaction committed:

- SQLite runs in WAL mode with ``synchronous=FULL`` by default: every commit fsyncs the WAL,
  so an acknowledged change survives a process crash *and* a power loss. ``NORMAL`` (pass
  ``sqlite_synchronous="NORMAL"``) survives a process crash (``SIGKILL``) but may lose the
  last commits on power loss; it is much faster on slow disks. The trade-off is measured by
  ``bench/core.py``.
- PostgreSQL commits with its server's ``synchronous_commit`` (``on`` by default: WAL flushed
  before the commit returns).

Versions: an upsert writes a row only when the stored ``version`` is lower than the new one;
when any row of a change set is refused the transaction rolls back and
:class:`~scheduler.store.protocol.VersionConflictError` is raised.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from scheduler.core.actions import ChangeSet
from scheduler.core.errors import DuplicateSubmissionError
from scheduler.core.records import Job
from scheduler.core.states import JobState
from scheduler.store import migrations, schema
from scheduler.store.lease import check_epoch
from scheduler.store.protocol import (
    JobPage,
    StoredState,
    StoreError,
    StoreLockedError,
    VersionConflictError,
    check_limit,
    decode_page_token,
    encode_page_token,
)
from scheduler.store.serde import (
    campaign_from_row,
    campaign_to_row,
    job_from_row,
    job_to_row,
    node_from_row,
    node_to_row,
    queue_from_row,
    queue_to_row,
)
from topology.errors import InvalidInputError

Synchronous = Literal["FULL", "NORMAL"]
SQLITE_BUSY_TIMEOUT_MS = 30_000


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` (default the newest).

    Each revision runs in its own transaction together with the update of the stored revision
    number, DDL included (PostgreSQL's DDL is transactional, and so is SQLite's once the driver
    leaves transactions to us: see :func:`_sqlite_pragmas`). A process killed in the middle
    leaves the database at the revision before, and the next start carries on from there.
    """
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def create_engine(url: str, *, sqlite_synchronous: Synchronous = "FULL") -> sa.Engine:
    """An engine for ``url`` with the store's connection settings.

    Raises:
        InvalidInputError: ``invalid_db_url`` for a URL that is not SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise InvalidInputError(f"invalid database URL {url!r}", reason="invalid_db_url") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidInputError(
                "the SQLite store needs a file: sqlite:///path/to/firsthop.db",
                reason="invalid_db_url",
            )
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1e3})
        sa.event.listen(engine, "connect", _sqlite_pragmas(sqlite_synchronous))
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise InvalidInputError(
                f"use the psycopg 3 driver: postgresql+psycopg://... (got {parsed.drivername})",
                reason="invalid_db_url",
            )
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise InvalidInputError(
        f"unsupported database {backend!r}: use sqlite:///PATH or postgresql+psycopg://...",
        reason="invalid_db_url",
    )


def _sqlite_pragmas(synchronous: Synchronous) -> Callable[[Any, Any], None]:
    """Per-connection settings. Python's ``sqlite3`` driver opens a transaction only before
    DML and commits nothing of a ``CREATE`` or ``ALTER`` done outside one, so a migration
    killed midway left half a schema behind (``table queues already exists``); with
    ``isolation_level = None`` the driver stays out of the way and :func:`_sqlite_begin`
    starts every transaction SQLAlchemy begins, DDL included (SQLAlchemy's documented recipe
    for pysqlite)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def _sqlite_begin(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def lock_sqlite_file(database: str) -> int:
    """Take the exclusive lock of a SQLite store: ``flock`` on ``DATABASE.lock``; the open
    descriptor (closing it releases the lock, as does the death of the process).

    ``flock`` locks are independent of the POSIX record locks SQLite itself takes on the
    database file, so this lock never interferes with SQLite's own locking.

    Raises:
        StoreLockedError: another process (or another store object) holds the lock.
    """
    path = f"{database}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise StoreLockedError(
            f"another scheduler uses the store {database} (it holds {path}"
            + (f", pid {holder}" if holder else "")
            + "); stop it first, or give this one another --db"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


class SqlStore:
    """A :class:`~scheduler.store.protocol.Store` on SQLite or PostgreSQL.

    Args:
        url: the database URL (see the module docstring).
        sqlite_synchronous: SQLite's ``synchronous`` setting (ignored for PostgreSQL).
        exclusive: for SQLite, hold an exclusive lock on the store until :meth:`close` (a
            scheduler does: two schedulers on one store would split its jobs). PostgreSQL
            stores are shared through the leader lease instead.

    Raises:
        InvalidInputError: ``invalid_db_url``.
        StoreLockedError: ``exclusive`` and another process holds the store.
        StoreError: the database cannot be reached or migrated.
    """

    def __init__(
        self, url: str, *, sqlite_synchronous: Synchronous = "FULL", exclusive: bool = False
    ) -> None:
        self.url = url
        self.engine = create_engine(url, sqlite_synchronous=sqlite_synchronous)
        self.dialect = self.engine.dialect.name
        self._lock_fd: int | None = None
        database = self.engine.url.database
        if exclusive and self.dialect == "sqlite" and database:
            self._lock_fd = lock_sqlite_file(database)
        self._upserts = self._build_upserts()
        self.fence_epoch: int | None = None
        """Set by a leader (PostgreSQL with a leader lease): every :meth:`save` first checks
        in its transaction that the lease still carries this epoch (``check_epoch``)."""
        try:
            migrate(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            self.close()
            raise StoreError(f"cannot open store {self._safe_url()}: {exc}") from exc

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.OperationalError as exc:
            raise StoreError(f"store {self._safe_url()} failed: {exc.orig}") from exc

    # ------------------------------------------------------------------ reads

    def load(self, *, finished_after: datetime | None = None) -> StoredState:
        """Every stored record (jobs in submission order); with ``finished_after``, finished
        jobs only from then on (an index on ``finished_at`` makes this cost what is kept)."""
        t = schema.jobs
        with self._errors(), self.engine.connect() as conn:
            if finished_after is None:
                rows = conn.execute(sa.select(t).order_by(t.c.submitted_at, t.c.id))
                job_list = tuple(job_from_row(r._asdict()) for r in rows)
            else:
                # Two probes of ix_jobs_finished (unfinished, then recently finished), sorted
                # here: one query with OR and ORDER BY walks the whole table in submit order.
                loaded = [
                    job_from_row(r._asdict())
                    for query in (
                        sa.select(t).where(t.c.finished_at.is_(None)),
                        sa.select(t).where(t.c.finished_at >= finished_after),
                    )
                    for r in conn.execute(query)
                ]
                loaded.sort(key=lambda j: (j.submitted_at, j.id))
                job_list = tuple(loaded)
            nodes = conn.execute(sa.select(schema.nodes).order_by(schema.nodes.c.name))
            node_list = tuple(node_from_row(r._asdict()) for r in nodes)
            queues = conn.execute(sa.select(schema.queues).order_by(schema.queues.c.name))
            queue_list = tuple(queue_from_row(r._asdict()) for r in queues)
            campaigns = conn.execute(sa.select(schema.campaigns).order_by(schema.campaigns.c.name))
            campaign_list = tuple(campaign_from_row(r._asdict()) for r in campaigns)
        return StoredState(job_list, node_list, queue_list, campaign_list)

    def get_job(self, job_id: str) -> Job | None:
        """The stored job, or ``None``."""
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(
                sa.select(schema.jobs).where(schema.jobs.c.id == job_id)
            ).one_or_none()
        return None if row is None else job_from_row(row._asdict())

    def job_for_submission(self, user: str, submission_id: str) -> Job | None:
        """The job ``user`` submitted with ``submission_id``, or ``None``."""
        t = schema.jobs
        query = sa.select(t).where(t.c.user == user, t.c.submission_id == submission_id)
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else job_from_row(row._asdict())

    def has_finished_before(self, at: datetime) -> bool:
        """Whether a stored job finished before ``at`` (one probe of the index)."""
        t = schema.jobs
        query = sa.select(t.c.id).where(t.c.finished_at < at).limit(1)
        with self._errors(), self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def count_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
    ) -> int:
        """How many jobs match the filters."""
        t = schema.jobs
        query = sa.select(sa.func.count()).select_from(t)
        if states:
            query = query.where(t.c.state.in_(sorted(s.value for s in states)))
        if queue is not None:
            query = query.where(t.c.queue == queue)
        if user is not None:
            query = query.where(t.c.user == user)
        with self._errors(), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def list_jobs(
        self,
        *,
        states: Collection[JobState] = (),
        queue: str | None = None,
        user: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> JobPage:
        """Jobs in submission order (then id), filtered, one page at a time."""
        check_limit(limit)
        t = schema.jobs
        query = sa.select(t).order_by(t.c.submitted_at, t.c.id).limit(limit + 1)
        if states:
            query = query.where(t.c.state.in_(sorted(s.value for s in states)))
        if queue is not None:
            query = query.where(t.c.queue == queue)
        if user is not None:
            query = query.where(t.c.user == user)
        if page_token is not None:
            at, job_id = decode_page_token(page_token)
            query = query.where(
                sa.or_(t.c.submitted_at > at, sa.and_(t.c.submitted_at == at, t.c.id > job_id))
            )
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        jobs = tuple(job_from_row(r._asdict()) for r in rows[:limit])
        token = encode_page_token(jobs[-1]) if len(rows) > limit else None
        return JobPage(jobs, token)

    # ------------------------------------------------------------------ writes

    def save(self, changes: ChangeSet) -> None:
        """Write ``changes`` in one transaction; durable when this returns.

        Raises:
            VersionConflictError: a stored record is not older than its replacement.
            DuplicateSubmissionError: two jobs with one (user, submission id).
            StoreError: the database failed.
            NotLeaderError: ``fence_epoch`` is set and a newer leader took over (nothing
                written). An empty change set still checks the epoch then, which is how the
                runtime fences commands that change nothing stored.
        """
        if not changes and self.fence_epoch is None:
            return
        try:
            with self._errors(), self.engine.begin() as conn:
                if self.fence_epoch is not None:
                    check_epoch(conn, self.fence_epoch)
                self._upsert(conn, schema.queues, "name", [queue_to_row(q) for q in changes.queues])
                self._upsert(conn, schema.nodes, "name", [node_to_row(n) for n in changes.nodes])
                self._upsert(conn, schema.jobs, "id", [job_to_row(j) for j in changes.jobs])
                self._upsert(
                    conn,
                    schema.campaigns,
                    "name",
                    [campaign_to_row(c) for c in changes.campaigns],
                )
        except sa.exc.IntegrityError as exc:
            raise DuplicateSubmissionError(
                f"a (user, submission id) pair is already used by another job: {exc.orig}"
            ) from None

    def _upsert(
        self, conn: sa.Connection, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]
    ) -> None:
        if not rows:
            return
        written = conn.execute(self._upserts[table.name], list(rows)).scalars().all()
        if len(written) != len(rows):
            missing = sorted({r[key] for r in rows} - set(written))
            raise VersionConflictError(
                f"{table.name} {', '.join(map(str, missing[:5]))}: a stored version is not "
                "older than the one being saved"
            )

    def _build_upserts(self) -> dict[str, sa.Executable]:
        """``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE stored.version < new.version``
        per table, built once (building a statement costs more than running it)."""
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        out: dict[str, sa.Executable] = {}
        for table, key in (
            (schema.queues, "name"),
            (schema.nodes, "name"),
            (schema.jobs, "id"),
            (schema.campaigns, "name"),
        ):
            stmt = insert(table)
            updated = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != key}
            out[table.name] = stmt.on_conflict_do_update(
                index_elements=[table.c[key]],
                set_=updated,
                where=table.c.version < stmt.excluded.version,
            ).returning(table.c[key])
        return out

    def close(self) -> None:
        """Close every pooled connection and release the store's lock."""
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def open_store(
    url: str, *, sqlite_synchronous: Synchronous = "FULL", exclusive: bool = False
) -> SqlStore:
    """Open (and migrate) the SQL store at ``url`` (see :class:`SqlStore`)."""
    return SqlStore(url, sqlite_synchronous=sqlite_synchronous, exclusive=exclusive)
