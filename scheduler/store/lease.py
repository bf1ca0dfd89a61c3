"""Leader election for schedulers sharing one PostgreSQL store, with a fencing epoch.

Several ``firsthop-scheduler`` processes may point at one PostgreSQL database; exactly one
leads (serves, schedules, talks to agents), the others wait. The mechanism has two parts:

- **A session advisory lock** (``pg_try_advisory_lock``) held on a dedicated connection for as
  long as the process leads. When the leader dies, its connection closes and PostgreSQL releases
  the lock at once, so a standby polling every ``poll_s`` acquires it within one poll.
- **A lease row** (``leader_lease``) holding the **epoch**, the holder and its address, the
  PostgreSQL backend pid of the lock's connection, and ``renewed_at`` (the database's clock,
  so schedulers' clocks never matter). Whoever acquires the lock increments the epoch in the
  same step. The leader renews the row every few seconds; a leader that is alive but silent
  (paused with SIGSTOP, partitioned from the database) keeps its connection and its lock, so a
  standby that finds the row older than ``lease_s`` terminates the holder's backend
  (``pg_terminate_backend``), which frees the lock for the next poll.

**Fencing.** Every write of the leader runs :func:`check_epoch` in its transaction: it reads
the lease row ``FOR SHARE`` and refuses with :class:`NotLeaderError` when the epoch moved on.
A takeover's ``UPDATE`` of the row conflicts with that share lock, so a deposed leader's
transaction either committed before the takeover or fails after it; it never writes under the
new leader. Agents do the same with the epoch every command carries: they ignore commands of an
older epoch than the newest they have seen.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from scheduler.store import schema
from topology.errors import FirsthopError

LEASE_NAME: Final = "scheduler"
ADVISORY_KEY: Final = 0x46495253_54484F50 & 0x7FFF_FFFF_FFFF_FFFF
"""``FIRSTHOP`` in ASCII, as the 64-bit advisory lock key (positive bigint)."""
DEFAULT_LEASE_S: Final = 5.0

_log = logging.getLogger(__name__)


class NotLeaderError(FirsthopError):
    """This scheduler does not (or no longer) hold the leader lease."""

    status_code = "UNAVAILABLE"
    default_reason = "not_leader"

    def __init__(self, message: str, *, leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_address = leader_address


@dataclass(frozen=True, slots=True)
class Leadership:
    """Who leads: the fencing epoch, the holder's name and the address clients should use."""

    epoch: int
    holder: str
    address: str


class LeaderLease:
    """One scheduler's side of the election on a PostgreSQL database.

    Args:
        url: the store's SQLAlchemy URL (PostgreSQL).
        holder: this scheduler's name (unique per process: host and pid).
        address: where clients reach this scheduler when it leads.
        lease_s: a lease not renewed for this long is taken over by force.
    """

    def __init__(
        self, url: str, holder: str, address: str, *, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        self._engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        if self._engine.dialect.name != "postgresql":
            raise FirsthopError(
                "a leader lease needs the PostgreSQL store", reason="lease_needs_postgresql"
            )
        self.holder = holder
        self.address = address
        self.lease_s = lease_s
        self._conn: sa.Connection | None = None
        self.leadership: Leadership | None = None

    def _lock_connection(self) -> sa.Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def try_acquire(self) -> Leadership | None:
        """Become the leader if nobody else is; the new leadership, or ``None``.

        A standby calls this every poll. When the lock is held by a holder whose lease row
        is older than ``lease_s``, that holder's backend is terminated so the next poll can win.
        """
        if self.leadership is not None:
            return self.leadership
        try:
            conn = self._lock_connection()
            got = bool(
                conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}
                ).scalar()
            )
        except sa.exc.DBAPIError as exc:
            _log.warning("leader election: database unavailable (%s)", type(exc).__name__)
            self._drop_connection()
            return None
        if not got:
            self._depose_if_stale(conn)
            return None
        with self._engine.begin() as tx:
            epoch = self._claim(tx, conn)
        self.leadership = Leadership(epoch, self.holder, self.address)
        _log.info("leader election: %s leads with epoch %d", self.holder, epoch)
        return self.leadership

    def _claim(self, tx: sa.Connection, lock_conn: sa.Connection) -> int:
        table = schema.leader_lease
        pid = int(lock_conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        row = tx.execute(
            sa.select(table.c.epoch).where(table.c.name == LEASE_NAME).with_for_update()
        ).first()
        values = {
            "holder": self.holder,
            "address": self.address,
            "backend_pid": pid,
            "renewed_at": sa.func.now(),
        }
        if row is None:
            tx.execute(sa.insert(table).values(name=LEASE_NAME, epoch=1, **values))
            return 1
        epoch = int(row.epoch) + 1
        tx.execute(sa.update(table).where(table.c.name == LEASE_NAME).values(epoch=epoch, **values))
        return epoch

    def _depose_if_stale(self, conn: sa.Connection) -> None:
        table = schema.leader_lease
        stale = conn.execute(
            sa.select(table.c.backend_pid, table.c.holder).where(
                table.c.name == LEASE_NAME,
                table.c.renewed_at
                < sa.func.now() - sa.text(f"interval '{float(self.lease_s)} seconds'"),
            )
        ).first()
        if stale is None or stale.backend_pid is None:
            return
        _log.warning(
            "leader election: %s has not renewed its lease for %.1f s; ending its session",
            stale.holder,
            self.lease_s,
        )
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": stale.backend_pid})

    def renew(self) -> bool:
        """Extend the lease; ``False`` (and leadership dropped) when it was lost."""
        if self.leadership is None:
            return False
        table = schema.leader_lease
        try:
            conn = self._lock_connection()
            held = bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND pid = pg_backend_pid() AND granted"
                    )
                ).scalar()
            )
            updated = (
                held
                and conn.execute(
                    sa.update(table)
                    .where(table.c.name == LEASE_NAME, table.c.epoch == self.leadership.epoch)
                    .values(renewed_at=sa.func.now())
                ).rowcount
                == 1
            )
        except sa.exc.DBAPIError:
            updated = False
        if not updated:
            _log.error(
                "leader election: %s lost the lease (epoch %d)", self.holder, self.leadership.epoch
            )
            self.leadership = None
            self._drop_connection()
        return updated

    def current(self) -> Leadership | None:
        """Who leads according to the lease row (for a standby's answers)."""
        table = schema.leader_lease
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.name == LEASE_NAME)).first()
        return None if row is None else Leadership(int(row.epoch), row.holder, row.address)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        """Give up leadership (the lock goes with the connection) and release resources."""
        self.leadership = None
        self._drop_connection()
        self._engine.dispose()


def check_epoch(tx: sa.Connection, epoch: int) -> None:
    """Inside a write transaction: refuse unless the lease still carries ``epoch``.

    Raises:
        NotLeaderError: a newer leader took over.
    """
    table = schema.leader_lease
    row = tx.execute(
        sa.select(table.c.epoch, table.c.address)
        .where(table.c.name == LEASE_NAME)
        .with_for_update(read=True)
    ).first()
    if row is None or int(row.epoch) != epoch:
        address = "" if row is None else str(row.address)
        raise NotLeaderError(
            f"the leader lease moved on (epoch {epoch} is over)", leader_address=address
        )
