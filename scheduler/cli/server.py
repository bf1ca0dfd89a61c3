"""``firsthop-scheduler``: runs the scheduler server until SIGTERM or SIGINT.

``firsthop-scheduler --listen HOST:PORT --db URL --topology FILE [--config FILE]
[--metrics-port N]``. Flags override ``FIRSTHOP_*`` environment variables, which override the
config file (:mod:`scheduler.config`). Once serving it prints ``listening on HOST:PORT`` (the
host it bound, ``0.0.0.0`` for every interface, and the real port when ``--listen`` asked for
port 0) and, with ``--metrics-port``, ``metrics on http://HOST:PORT/metrics``, each flushed at
once. A second scheduler on the same port (``address_in_use``) or SQLite store
(``store_locked``) exits 2. SIGTERM drains in-flight RPCs,
stops the runtime and closes the store, then exits 0. Bad configuration exits 2 with one
``error: <reason>: <message>`` line.

Must not import ``agents``: the server reaches agents only over gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.common import exit_on_error
from scheduler.config import ServerConfig, load_config
from scheduler.server import build_server

app = typer.Typer(
    name="firsthop-scheduler",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


@app.command()
def serve(
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to serve gRPC on (port 0: any free port).")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="Store URL: sqlite:///PATH, postgresql+psycopg://USER@HOST/DB, or memory://."
        ),
    ] = None,
    topology: Annotated[
        Path | None, typer.Option(help="The cluster's topology file (.yaml or .json).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with any server settings.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve Prometheus metrics on this port (0: any)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "INFO",
) -> None:
    """Run the firsthop scheduler server (gRPC API, scheduling core, durable store)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with exit_on_error():
        settings = load_config(
            config, listen=listen, db_url=db, topology=topology, metrics_port=metrics_port
        )
    asyncio.run(_serve(settings))


async def _serve(settings: ServerConfig) -> None:
    # The grpc.aio server binds to the running event loop: build it inside it.
    with exit_on_error():
        server = build_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        print(f"listening on {_bound(settings.listen, server.port)}", flush=True)
        if server.metrics_port is not None:
            host = server.config.metrics_host
            print(f"metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
        await stop.wait()
        logging.getLogger(__name__).info("stopping")
    finally:
        await server.stop()


def _bound(listen: str, port: int) -> str:
    """What was bound: the host of ``--listen`` (``0.0.0.0`` stays every interface) and the
    real port."""
    return f"{listen.rpartition(':')[0]}:{port}"


def main() -> None:
    """Console-script entry point of ``firsthop-scheduler``."""
    app(prog_name="firsthop-scheduler")
