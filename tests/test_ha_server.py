"""Leader election in the server, in one process, on a real throwaway PostgreSQL.

- A second scheduler on the same database waits: every firsthop RPC gets ``not_leader`` with
  the leader's address, health says NOT_SERVING, and a client given only the standby follows
  the hint to the leader. When the leader stops, the standby leads with the next epoch and
  the state the leader left; a client with both addresses moves on by itself.
- Fencing: a leader whose lease was taken over (its lock session ended, a newer epoch
  claimed) but which has not noticed yet gets its next write refused by the store: the
  request fails with ``not_leader``, nothing is stored, and the server steps down.
"""

from __future__ import annotations

import asyncio

import grpc.aio
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_builders import WAIT_S, fast_config, small_topology, spec

from scheduler.client import FirsthopClient, RemoteError
from scheduler.server import SchedulerServer, build_server
from scheduler.store.lease import LeaderLease
from scheduler.store.sql import SqlStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _server(db_url: str, **fields: object) -> SchedulerServer:
    config = fast_config(**{"db_url": db_url, "lease_s": 2.0, "leader_poll_s": 0.05, **fields})
    return build_server(config, topology=small_topology(1, 1, 2))


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S)
        return int(answer.status)


async def test_a_standby_points_at_the_leader_and_takes_over_with_its_state(
    postgres_url: str,
) -> None:
    leader = _server(postgres_url)
    await leader.start()
    await asyncio.wait_for(leader.leading.wait(), WAIT_S)
    standby = _server(postgres_url)
    await standby.start()
    try:
        async with asyncio.timeout(WAIT_S):  # its first poll reads who leads
            while not standby.gate.leader_address:
                await asyncio.sleep(0.01)
        first = await asyncio.to_thread(_submit, leader.address, "first")
        standby_health = await _health(standby.address)

        def ask_standby_alone() -> RemoteError:
            with FirsthopClient(standby.address, failover_s=0) as client:
                try:
                    client.cluster_status()
                except RemoteError as exc:
                    return exc
            raise AssertionError("a standby answered")

        refused = await asyncio.to_thread(ask_standby_alone)

        def follow_hint() -> tuple[str, str]:
            with FirsthopClient(standby.address) as client:
                job = client.get_job(first)
                return job.id, client.current

        followed = await asyncio.to_thread(follow_hint)
        epoch_before = leader.leadership.epoch if leader.leadership else 0
        await leader.stop(0.5)
        await asyncio.wait_for(standby.leading.wait(), WAIT_S)

        def both_addresses() -> tuple[str, int, str]:
            with FirsthopClient(f"{leader.address},{standby.address}") as client:
                job = client.get_job(first)
                return job.id, client.failovers, client.current

        after = await asyncio.to_thread(both_addresses)
    finally:
        await standby.stop(0.5)

    assert standby_health == health_pb2.HealthCheckResponse.NOT_SERVING
    assert refused.reason == "not_leader"
    assert leader.address in refused.message
    assert followed == (first, leader.address)
    assert standby.leadership is not None
    assert standby.leadership.epoch == epoch_before + 1
    assert after == (first, 1, standby.address)


async def test_a_deposed_leader_is_fenced_off_by_the_store_and_steps_down(
    postgres_url: str,
) -> None:
    # lease_s is long: the leader would not notice by renewing during the test.
    leader = _server(postgres_url, lease_s=600.0)
    await leader.start()
    await asyncio.wait_for(leader.leading.wait(), WAIT_S)
    usurper = LeaderLease(postgres_url, "usurper", "127.0.0.1:1", lease_s=600.0)
    try:
        engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            pid = conn.execute(
                sa.text("SELECT backend_pid FROM leader_lease WHERE name = 'scheduler'")
            ).scalar_one()
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        engine.dispose()
        won = None
        for _ in range(200):  # the lock is free once the backend has gone
            won = usurper.try_acquire()
            if won is not None:
                break
            await asyncio.sleep(0.02)

        def submit_to_old_leader() -> RemoteError:
            with FirsthopClient(leader.address, failover_s=0) as client:
                try:
                    client.submit_job(spec(8, 1.0), submission_id="fenced")
                except RemoteError as exc:
                    return exc
            raise AssertionError("the deposed leader accepted a submission")

        refused = await asyncio.to_thread(submit_to_old_leader)
        await asyncio.wait_for(leader.deposed.wait(), WAIT_S)
        check = SqlStore(postgres_url)
        stored = check.load().jobs
        check.close()
    finally:
        usurper.close()
        await leader.stop(0.5)

    assert won is not None
    assert refused.reason == "not_leader"
    assert stored == ()
    assert leader.gate.leading is False


def _submit(address: str, submission_id: str) -> str:
    with FirsthopClient(address) as client:
        job, _ = client.submit_job(spec(8, 1.0), submission_id=submission_id)
        return job.id
