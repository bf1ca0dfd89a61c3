"""The leader lease on a real PostgreSQL: one leader, takeover on death or silence, fencing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.store.lease import LeaderLease, Leadership, NotLeaderError, check_epoch
from scheduler.store.sql import SqlStore
from topology.errors import FirsthopError

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.05


def wait_until(acquire: Callable[[], Leadership | None], what: str, timeout: float) -> Leadership:
    """Poll ``acquire`` as a standby does, until it leads (a deadline, not a fixed wait)."""
    deadline = time.monotonic() + timeout
    while (got := acquire()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)  # the standby's poll interval
    return got


@pytest.fixture
def url(postgres_url: str) -> str:
    SqlStore(postgres_url).close()  # creates the schema
    return postgres_url


def test_one_leader_at_a_time_and_the_epoch_grows_on_every_takeover(url: str) -> None:
    a = LeaderLease(url, "a", "10.0.0.1:7000")
    b = LeaderLease(url, "b", "10.0.0.2:7000")
    try:
        first = a.try_acquire()
        assert first is not None
        assert first.epoch == 1
        assert b.try_acquire() is None
        assert b.current() == first
        assert a.renew()

        a.close()  # the server frees the lock when it sees the session end: poll, as standbys do
        second = wait_until(b.try_acquire, "the takeover", timeout=10)
        assert second.epoch == 2
        assert second.address == "10.0.0.2:7000"
    finally:
        a.close()
        b.close()


def test_a_deposed_leader_cannot_write_or_renew(url: str) -> None:
    a = LeaderLease(url, "a", "addr-a")
    b = LeaderLease(url, "b", "addr-b")
    engine = sa.create_engine(url)
    try:
        assert a.try_acquire() is not None
        with engine.begin() as tx:
            check_epoch(tx, 1)
        # a goes silent: its lease row ages past lease_s while its connection stays open.
        with engine.begin() as tx:
            tx.execute(sa.text("UPDATE leader_lease SET renewed_at = now() - interval '1 hour'"))
        assert b.try_acquire() is None, "the first poll only ends the silent holder's session"
        taken = wait_until(b.try_acquire, "the takeover", timeout=10)

        assert taken.epoch == 2
        assert not a.renew()
        assert a.leadership is None
        with pytest.raises(NotLeaderError) as caught, engine.begin() as tx:
            check_epoch(tx, 1)
        assert caught.value.reason == "not_leader"
        assert caught.value.leader_address == "addr-b"
    finally:
        a.close()
        b.close()
        engine.dispose()


HOLDER = """
import sys, time
from scheduler.store.lease import LeaderLease
lease = LeaderLease(sys.argv[1], "victim", "addr-victim")
assert lease.try_acquire() is not None
print("leading", flush=True)
time.sleep(600)
"""


def test_a_killed_leader_is_replaced_within_a_poll(url: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'proto'}"}
    victim = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True, env=env
    )
    standby = LeaderLease(url, "standby", "addr-standby")
    try:
        assert victim.stdout is not None
        assert victim.stdout.readline().strip() == "leading"
        assert standby.try_acquire() is None
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        taken = wait_until(standby.try_acquire, "the takeover", timeout=10)
        took = time.monotonic() - killed_at
    finally:
        victim.kill()
        victim.wait(10)
        if victim.stdout is not None:
            victim.stdout.close()
        standby.close()
    assert taken.epoch == 2
    assert took < 2.0


def test_sqlite_has_no_lease() -> None:
    with pytest.raises(FirsthopError) as caught:
        LeaderLease("sqlite://", "a", "x")
    assert caught.value.reason == "lease_needs_postgresql"
