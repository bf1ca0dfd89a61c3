"""Services go on the ``grpc.aio`` server as generic handlers only.

A generated ``add_*Servicer_to_server`` function registers its service twice: as one generic
handler (a dictionary of the service's methods) and, method by method, as *registered*
methods. grpcio's asyncio server keeps one pending "request call" future per registered
method, plus one for generic calls, and for every call it accepts it waits on all of them
with ``asyncio.wait(..., FIRST_COMPLETED)``, which adds a done-callback to each future and
removes it again (``AioServer._server_main_loop``). With this server's 34 methods that is 35
futures per accepted RPC: about a fifth of the event loop's CPU time under a ``SubmitJob``
load (``bench/submit_path.py`` profile), paid by every RPC, health checks included.

:class:`GenericRegistration` stands in for the server in those functions and passes on only
the generic handlers, so the server waits on one future per call and finds the method by the
generic handlers' dictionary lookups; what each method does is unchanged.

Must not import ``scheduler.store``, ``scheduler.core`` or ``agents``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import grpc
import grpc.aio


class GenericRegistration(grpc.aio.Server):
    """Registers services on ``server`` through their generic handlers only.

    Pass it where the generated ``add_*Servicer_to_server`` functions (and helpers that call
    them, such as ``enable_server_reflection``, which checks for an asyncio server) expect
    the server. It only registers: ports and the server's life stay with the server itself,
    and the other methods of ``grpc.aio.Server`` refuse with ``TypeError``.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.generic_services: list[str] = []
        """Services whose per-method registration was left out (their generic handler serves
        them), in registration order."""

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Pass the generic handlers on to the server."""
        self._server.add_generic_rpc_handlers(tuple(generic_rpc_handlers))

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Any]
    ) -> None:
        """Leave the per-method registration out: the generic handler the same generated
        function adds serves every one of ``method_handlers``."""
        del method_handlers
        self.generic_services.append(service_name)

    def add_insecure_port(self, address: str) -> NoReturn:
        """Refused: bind on the server."""
        self._only_registers("add_insecure_port")

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> NoReturn:
        """Refused: bind on the server."""
        self._only_registers("add_secure_port")

    async def start(self) -> NoReturn:
        """Refused: start the server."""
        self._only_registers("start")

    async def stop(self, grace: float | None = None) -> NoReturn:
        """Refused: stop the server."""
        self._only_registers("stop")

    async def wait_for_termination(self, timeout: float | None = None) -> NoReturn:
        """Refused: wait on the server."""
        self._only_registers("wait_for_termination")

    def _only_registers(self, method: str) -> NoReturn:
        raise TypeError(f"{method}: a GenericRegistration only registers services; call the server")
