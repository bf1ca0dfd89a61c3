"""Services registered through their generic handlers only (``scheduler.api.registration``):
every service of the real server answers, none is registered method by method, and the
registrar refuses to act as the server it stands in for."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from server_builders import running_server, stubs

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api.registration import GenericRegistration
from scheduler.server import SERVICE_NAMES


async def _listed_services(channel: grpc.aio.Channel) -> set[str]:
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    return {
        svc.name
        async for answer in reflect.ServerReflectionInfo(iter([request]))
        for svc in answer.list_services_response.service
    }


async def test_generated_functions_register_generic_handlers_only() -> None:
    server = grpc.aio.server()
    registrar = GenericRegistration(server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), registrar)  # type: ignore[attr-defined]
    reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), registrar)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            answer = await check(health_pb2.HealthCheckRequest(), timeout=10)
            listed = await _listed_services(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/grpc.health.v1.Health/Nope")(b"", timeout=10)
    finally:
        await server.stop(None)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert listed == {health.SERVICE_NAME, reflection.SERVICE_NAME}
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert registrar.generic_services == [health.SERVICE_NAME, reflection.SERVICE_NAME]


async def test_the_server_registers_every_service_generically() -> None:
    async with running_server() as server, stubs(server.address) as s:
        listed = await _listed_services(s.channel)
        status = await s.admin.GetClusterStatus(admin_pb2.GetClusterStatusRequest())
        page = await s.jobs.ListJobs(jobs_pb2.ListJobsRequest())
    assert set(SERVICE_NAMES) <= listed
    assert status.status.gpus_free >= 0
    assert page.total_size == 0
    assert set(server.generic_services) == {
        *SERVICE_NAMES,
        "firsthop.v1.SlurmService",
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    }


async def test_the_registrar_only_registers() -> None:
    registrar = GenericRegistration(grpc.aio.server())
    with pytest.raises(TypeError, match="only registers"):
        registrar.add_insecure_port("127.0.0.1:0")
    with pytest.raises(TypeError, match="only registers"):
        await registrar.start()
