"""The composition root: :func:`build_server` wires a whole scheduler server from its config.

Topology file -> topology index; ``db_url`` -> store (``memory://`` for a throwaway one);
store -> scheduling core (restored records); core + store + clock -> runtime; runtime ->
servicers; servicers + interceptors (RPC metrics outermost, then errors, then authorisation)
+ health checking + server reflection -> a ``grpc.aio`` server (every service registered
through its generic handler only: :mod:`scheduler.api.registration`). Nothing else in the scheduler
reads configuration.

Transport security (docs/security.md): with ``tls_cert``/``tls_key`` the users' port speaks
TLS (callers present bearer tokens), and ``agent_listen`` opens a second port that requires a
client certificate signed by ``client_ca`` (agents, the Slurm programs). Without TLS the server
runs in insecure local mode (every caller trusted, as in the demo), which it refuses on a
non-loopback address unless ``insecure`` is set. Requests are capped at ``max_message_bytes``
and concurrent RPCs at ``max_concurrent_rpcs`` (both RESOURCE_EXHAUSTED beyond).

:func:`build_server` returns a :class:`SchedulerServer`, which holds the ``grpc.aio.Server``
(``.grpc``) together with the runtime, because the two start and stop together: ``start``
loads the store and begins serving, ``stop`` drains RPCs, stops the runtime and closes the
store.

It sits above every part of the scheduler (API, runtime, store, core), which is why it is not
in :mod:`scheduler.api`: the API itself may not import the store. Must not import ``agents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from firsthop.v1 import (
    access_pb2,
    access_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)
from scheduler.api.access_servicer import AccessServicer
from scheduler.api.admin_servicer import AdminServicer
from scheduler.api.agent_servicer import AgentServicer
from scheduler.api.auth import AuthInterceptor
from scheduler.api.errors import (
    ErrorInterceptor,
    Handler,
    HandlerCache,
    Interceptor,
    wrap_handler,
)
from scheduler.api.forecast import Forecaster
from scheduler.api.jobs_servicer import JobServicer
from scheduler.api.registration import GenericRegistration
from scheduler.api.slurm_servicer import add_slurm_service
from scheduler.api.standby import LeaderGate, StandbyInterceptor
from scheduler.config import ServerConfig
from scheduler.core.clock import Clock
from scheduler.core.config import SchedulerConfig
from scheduler.core.scheduler import Scheduler
from scheduler.runtime.fleet import Fleet
from scheduler.runtime.metrics import Metrics
from scheduler.runtime.placement_worker import PlacementWorker
from scheduler.runtime.runtime import Runtime
from scheduler.security.principals import Principals, bootstrap_admin
from scheduler.store.access import MemoryPrincipals, SqlPrincipals
from scheduler.store.lease import LeaderLease, Leadership
from scheduler.store.memory import MemoryStore
from scheduler.store.protocol import Store
from scheduler.store.sql import SqlStore, open_store
from topology.errors import InvalidInputError
from topology.model import Topology

MEMORY_URL: Final = "memory://"

SERVICE_NAMES: Final = (
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
)

SERVER_OPTIONS: Final = (
    # Agents keep long-lived streams and ping to keep NAT and load balancers honest.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # gRPC sets SO_REUSEPORT by default: a second scheduler on the port would listen too and
    # take half the clients. Refuse instead (address_in_use).
    ("grpc.so_reuseport", 0),
)

_log = logging.getLogger(__name__)

AsyncHealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]


class SystemClock:
    """The real clock: aware UTC wall time."""

    def now(self) -> datetime:
        """The current instant."""
        return datetime.now(UTC)


def open_configured_store(url: str) -> Store:
    """The store a ``db_url`` names (``memory://``, SQLite or PostgreSQL)."""
    if url == MEMORY_URL:
        return MemoryStore()
    return open_store(url, exclusive=True)


class RpcMetricsInterceptor(Interceptor):
    """Records every RPC's duration and final status code (outermost interceptor)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped = HandlerCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_name = handler_call_details.method
        return self._wrapped.get(full_name, handler, lambda: self._timed(handler, full_name))

    def _timed(self, handler: Handler, full_name: str) -> Handler:
        method = full_name.rsplit("/", 1)[-1]
        histogram = self._metrics.rpc_durations

        def timed_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                try:
                    return await behavior(request, context)
                finally:
                    histogram(method, _code(context)).observe(time.perf_counter() - started)

            return run

        def timed_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    histogram(method, _code(context)).observe(time.perf_counter() - started)

            return run

        return wrap_handler(handler, timed_unary, timed_stream)


def _code(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code is None else str(code)


@dataclass
class SchedulerServer:
    """A built server: the gRPC server, the runtime, and how to start and stop both."""

    config: ServerConfig
    grpc: grpc.aio.Server
    runtime: Runtime
    store: Store
    health: Any
    """The ``grpc_health`` asyncio health servicer."""
    port: int
    """The bound gRPC port (the real one when the config asked for port 0)."""
    metrics_port: int | None = None
    agent_port: int | None = None
    """The bound agents' port (mutual TLS), when ``agent_listen`` was set."""
    principals: Principals | None = None
    """Users, tokens and the audit trail (the store's tables)."""
    auth: AuthInterceptor | None = None
    """The authorisation interceptor (its audit writer is flushed on stop)."""
    forecaster: Forecaster | None = None
    """Start-time forecasts (``ForecastCluster``, ``ExplainJob``); closed on stop."""
    generic_services: tuple[str, ...] = ()
    """Services registered through their generic handlers only
    (:mod:`scheduler.api.registration`)."""

    @property
    def agent_address(self) -> str | None:
        """``HOST:PORT`` agents dial (``None`` without an agents' port)."""
        if self.agent_port is None or self.config.agent_listen is None:
            return None
        return _dialable(self.config.agent_listen, self.agent_port)

    @property
    def address(self) -> str:
        """``HOST:PORT`` clients can dial."""
        return _dialable(self.config.listen, self.port)

    lease: LeaderLease | None = None
    """The leader lease when several schedulers may share this store (PostgreSQL)."""
    gate: LeaderGate = field(default_factory=LeaderGate)
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once this scheduler leads (at once when there is no lease)."""
    deposed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when this leader lost its lease (or the store fenced it off) and stepped down."""
    leadership: Leadership | None = None
    _election: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve; without a lease, load the store and lead at once. With one, answer as a
        standby (``not_leader``) and lead once the lease is ours (:attr:`leading`)."""
        if self.lease is None:
            await self._lead()
            await self.grpc.start()
        else:
            self.gate.leading = False
            await self.grpc.start()
            for name in (*SERVICE_NAMES, ""):
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._election = asyncio.create_task(self._elect(self.lease), name="election")
        if self.config.metrics_port is not None:
            self.metrics_port = self.runtime.metrics.serve(
                self.config.metrics_host, self.config.metrics_port
            )

    async def _lead(self) -> None:
        await self.runtime.start()
        self.gate.leading = True
        for name in (*SERVICE_NAMES, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.leading.set()

    async def _elect(self, lease: LeaderLease) -> None:
        poll = self.config.leader_poll_s
        while True:
            won = await asyncio.to_thread(lease.try_acquire)
            if won is not None:
                break
            try:
                current = await asyncio.to_thread(lease.current)
            except Exception as exc:  # the database is away: keep polling
                _log.warning("standby: cannot read the lease (%s)", type(exc).__name__)
                current = None
            self.gate.leader_address = "" if current is None else current.address
            await asyncio.sleep(poll)
        self.leadership = won
        self.gate.leader_address = ""
        if isinstance(self.store, SqlStore):
            self.store.fence_epoch = won.epoch
        self.runtime.agents.epoch = won.epoch
        self.runtime.on_deposed.append(self._step_down)
        await self._lead()
        interval = self.config.lease_s / 3
        while not self.deposed.is_set():
            await asyncio.sleep(interval)
            if not await asyncio.to_thread(lease.renew):
                self._step_down()

    def _step_down(self) -> None:
        """Stop serving as the leader at once: refuse RPCs, end agent streams."""
        if self.deposed.is_set():
            return
        _log.error("stepping down: this scheduler no longer holds the leader lease")
        self.gate.leading = False
        self.runtime.close_streams()
        self.deposed.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop gracefully: NOT_SERVING, drain RPCs, stop the runtime, close the store."""
        if self._election is not None:
            self._election.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._election
        await self.health.enter_graceful_shutdown()
        self.runtime.close_streams()
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        await self.grpc.stop(grace)
        if self.auth is not None:
            await self.auth.flush()
        await self.runtime.stop()
        if self.forecaster is not None:
            self.forecaster.close()
        self.runtime.metrics.close()
        if self.lease is not None:
            self.lease.close()
        self.store.close()

    async def wait(self) -> None:
        """Wait until the gRPC server terminates."""
        await self.grpc.wait_for_termination()


def build_server(
    config: ServerConfig,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    topology: Topology | None = None,
    principals: Principals | None = None,
) -> SchedulerServer:
    """Wire a scheduler server from ``config`` (module docstring); nothing runs yet.

    Args:
        config: The server configuration.
        clock: The runtime's clock (default: the system clock).
        store: A store to use instead of opening ``config.db_url``.
        topology: A topology to use instead of loading ``config.topology``.
        principals: Users and audit trail to use instead of the store's tables.

    Raises:
        InvalidInputError: no topology, a bad topology file, a bad ``listen`` address or
            database URL; ``address_in_use`` when the port cannot be bound;
            ``insecure_listen`` for a non-loopback address without TLS or ``--insecure``;
            ``invalid_tls_config`` for half a TLS setup or unreadable PEM files.
        StoreError: the database cannot be opened or migrated.
    """
    if topology is None:
        if config.topology is None:
            raise InvalidInputError(
                "no topology: pass --topology FILE (or topology: in the config file)",
                reason="invalid_config",
            )
        topology = Topology.load(config.topology)
    tls = _tls_material(config)
    store = store if store is not None else open_configured_store(config.db_url)
    if principals is None:
        principals = SqlPrincipals(store.engine) if isinstance(store, SqlStore) else None
        principals = principals or MemoryPrincipals()
    if config.bootstrap_admin_file is not None and bootstrap_admin(
        principals, config.bootstrap_admin_file, datetime.now(UTC)
    ):
        _log.info("wrote the first admin's token to %s", config.bootstrap_admin_file)
    index = topology.index
    core_config = SchedulerConfig(
        heartbeat_timeout_s=config.heartbeat_timeout_s,
        stop_grace_s=config.stop_grace_s,
        placement=config.placement,
        return_lost_nodes=config.return_lost_nodes,
        max_checkpoint_grace_s=config.max_checkpoint_grace_s,
        repair_in_place=config.repair_in_place,
        blame_delay_s=2 * config.heartbeat_interval_s,
        repair_preempt_above=config.repair_preempt_above,
        spares_per_leaf=config.spares_per_leaf,
        spares_per_pod=config.spares_per_pod,
        defer_placement=config.placement_worker,
    )
    fence_warning = config.fence_warning()
    if fence_warning is not None:
        _log.warning("%s", fence_warning)

    runtime_clock = clock or SystemClock()
    retention = timedelta(seconds=config.job_retention_s)

    def build_core() -> Scheduler:
        stored = store.load(finished_after=runtime_clock.now() - retention)
        return Scheduler(
            index,
            core_config,
            jobs=stored.jobs,
            nodes=stored.nodes,
            queues=stored.queues,
            campaigns=stored.campaigns,
        )

    metrics = Metrics()
    runtime = Runtime(
        build_core,
        store,
        runtime_clock,
        metrics=metrics,
        tick_interval_s=config.tick_interval_s,
        max_batch=config.max_batch,
        archive=store,
        retention_s=config.job_retention_s,
        placement_worker=(
            PlacementWorker(index, config.placement, config.placement_work_s)
            if config.placement_worker
            else None
        ),
    )
    fleet = Fleet(runtime, topology)
    auth = AuthInterceptor(principals, insecure=tls is None)
    gate = LeaderGate()
    server = grpc.aio.server(
        interceptors=(
            RpcMetricsInterceptor(metrics),
            ErrorInterceptor(),
            StandbyInterceptor(gate),
            auth,
        ),
        options=(
            *SERVER_OPTIONS,
            ("grpc.max_receive_message_length", config.max_message_bytes),
        ),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    forecaster = Forecaster(
        runtime,
        budget_s=config.forecast_budget_s,
        cache_s=config.forecast_cache_s,
        horizon_s=config.forecast_horizon_s,
    )
    services = GenericRegistration(server)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(runtime, fleet.requests, forecaster), services
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(
            runtime,
            topology,
            fleet.requests,
            health_check_timeout_s=config.health_check_timeout_s,
            forecaster=forecaster,
        ),
        services,
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentServicer(
            runtime,
            fleet,
            heartbeat_interval_s=config.heartbeat_interval_s,
            heartbeat_timeout_s=config.heartbeat_timeout_s,
            fence_after_s=config.fence_after(),
        ),
        services,
    )
    add_slurm_service(services)
    access_pb2_grpc.add_AccessServiceServicer_to_server(
        AccessServicer(principals, before_reading_audit=auth.flush), services
    )
    health_servicer = AsyncHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), services
    )
    if tls is None:
        _check_insecure(config)
        port = _bind(server, config.listen)
        agent_port = None
    else:
        key, cert, client_ca = tls
        users = grpc.ssl_server_credentials([(key, cert)])
        port = _bind(server, config.listen, users)
        agent_port = None
        if config.agent_listen is not None:
            agents = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=client_ca, require_client_auth=True
            )
            agent_port = _bind(server, config.agent_listen, agents)
    built = SchedulerServer(
        config,
        server,
        runtime,
        store,
        health_servicer,
        port,
        gate=gate,
        agent_port=agent_port,
        principals=principals,
        auth=auth,
        forecaster=forecaster,
        generic_services=tuple(services.generic_services),
    )
    if config.leader_election and isinstance(store, SqlStore) and store.dialect == "postgresql":
        built.lease = LeaderLease(
            store.url,
            f"{socket.gethostname()}:{os.getpid()}",
            config.advertise_address or built.address,
            lease_s=config.lease_s,
        )
    return built


def _dialable(listen: str, port: int) -> str:
    host = listen.rsplit(":", 1)[0] or "127.0.0.1"
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


def is_loopback(listen: str) -> bool:
    """Whether ``HOST:PORT`` listens on a loopback address only (``localhost`` counts)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_insecure(config: ServerConfig) -> None:
    if config.agent_listen is not None:
        raise InvalidInputError(
            "--agent-listen needs --tls-cert, --tls-key and --client-ca (agents use mutual TLS)",
            reason="invalid_tls_config",
        )
    if is_loopback(config.listen):
        _log.info("insecure local mode: no TLS, every caller on %s is trusted", config.listen)
        return
    if not config.insecure:
        raise InvalidInputError(
            f"refusing to listen on {config.listen} without TLS: pass --tls-cert and --tls-key "
            "(see docs/security.md), or --insecure to accept any caller on the network",
            reason="insecure_listen",
        )
    _log.warning(
        "INSECURE: listening on %s without TLS; anyone who can reach it is trusted as an admin",
        config.listen,
    )


def _tls_material(config: ServerConfig) -> tuple[bytes, bytes, bytes | None] | None:
    """``(key, cert, client_ca)`` PEM bytes, or ``None`` without TLS."""
    given = [config.tls_cert is not None, config.tls_key is not None]
    if not any(given) and config.client_ca is None:
        return None
    if not all(given):
        raise InvalidInputError(
            "TLS needs both --tls-cert and --tls-key", reason="invalid_tls_config"
        )
    if config.agent_listen is not None and config.client_ca is None:
        raise InvalidInputError(
            "--agent-listen needs --client-ca (the CA of agents' certificates)",
            reason="invalid_tls_config",
        )
    assert config.tls_key is not None
    assert config.tls_cert is not None
    ca = None if config.client_ca is None else _read_pem(config.client_ca)
    return _read_pem(config.tls_key), _read_pem(config.tls_cert), ca


def _read_pem(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror}", reason="invalid_tls_config"
        ) from None


def _bind(
    server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise InvalidInputError(
            f"listen address {listen!r} is not HOST:PORT", reason="invalid_listen_address"
        )
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise InvalidInputError(
            f"cannot listen on {listen}: {exc}", reason="address_in_use"
        ) from None
    if port == 0:
        raise InvalidInputError(f"cannot listen on {listen}", reason="address_in_use")
    return port


async def serve_until_stopped(server: SchedulerServer, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then shut down gracefully."""
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
