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

Security (docs/security.md): ``--tls-cert FILE --tls-key FILE`` serve users over TLS (they
present bearer tokens); ``--client-ca FILE --agent-listen ADDR`` add the agents' port, which
requires a client certificate, printed as ``agents listening on HOST:PORT``. Without TLS the
server runs in insecure local mode and says so; it refuses a non-loopback ``--listen`` unless
``--insecure`` (which logs a warning).

On PostgreSQL several schedulers may share the store (leader election,
:mod:`scheduler.store.lease`): each prints ``listening on HOST:PORT`` and
``standby: waiting for the leader lease``, answers every RPC with ``not_leader`` (and the
leader's address) while it waits, and prints ``leading with epoch N`` once it leads. A leader
that loses its lease steps down at once and exits 4 (``UNAVAILABLE``) so that its supervisor
starts it again as a standby.

Once started, the process freezes what it loaded and makes full garbage collections rare
(:mod:`scheduler.runtime.collector`): with thousands of agents they took half its CPU.

Must not import ``agents``: the server reaches agents only over gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.common import exit_on_error
from scheduler.config import ServerConfig, load_config
from scheduler.runtime.collector import tune_collector
from scheduler.server import build_server
from topology.errors import ExitCode

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
    tls_cert: Annotated[
        Path | None, typer.Option(help="Server certificate (PEM): serve users over TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The server certificate's key.")] = None,
    client_ca: Annotated[
        Path | None, typer.Option(help="CA of agents' client certificates (mutual TLS).")
    ] = None,
    agent_listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the agents' port, which requires client certificates."),
    ] = None,
    bootstrap_admin: Annotated[
        Path | None,
        typer.Option(
            help="When no admin has a token, mint one for user 'admin' into this new file (0600)."
        ),
    ] = None,
    insecure: Annotated[
        bool | None,
        typer.Option(
            "--insecure",
            help="Allow a non-loopback --listen without TLS (every caller trusted; warns).",
        ),
    ] = None,
) -> None:
    """Run the firsthop scheduler server (gRPC API, scheduling core, durable store)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with exit_on_error():
        settings = load_config(
            config,
            listen=listen,
            db_url=db,
            topology=topology,
            metrics_port=metrics_port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            client_ca=client_ca,
            agent_listen=agent_listen,
            insecure=insecure,
            bootstrap_admin_file=bootstrap_admin,
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
    if settings.gc_full_every:
        # After loading, before agents connect (scheduler.runtime.collector).
        tune_collector(settings.gc_full_every)
    deposed = False
    try:
        print(f"listening on {_bound(settings.listen, server.port)}", flush=True)
        if server.agent_port is not None and settings.agent_listen is not None:
            print(
                f"agents listening on {_bound(settings.agent_listen, server.agent_port)}",
                flush=True,
            )
        if settings.tls_cert is None:
            print("insecure local mode: no TLS, every caller is trusted", flush=True)
        if server.metrics_port is not None:
            host = server.config.metrics_host
            print(f"metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
        if server.lease is not None:
            print("standby: waiting for the leader lease", flush=True)
            if await _first(server.leading, stop) is server.leading and server.leadership:
                print(f"leading with epoch {server.leadership.epoch}", flush=True)
        deposed = await _first(stop, server.deposed) is server.deposed
        logging.getLogger(__name__).info("stopping")
    finally:
        await server.stop()
    if deposed:
        # A supervisor (systemd Restart=always) starts it again, as a standby.
        print("lost the leader lease: stepped down", file=sys.stderr, flush=True)
        raise typer.Exit(int(ExitCode.UNAVAILABLE))


async def _first(*events: asyncio.Event) -> asyncio.Event:
    """Wait until one of ``events`` is set; the first that is."""
    waits = {asyncio.ensure_future(e.wait()): e for e in events}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return next(e for e in events if e.is_set())


def _bound(listen: str, port: int) -> str:
    """What was bound: the host of ``--listen`` (``0.0.0.0`` stays every interface) and the
    real port."""
    return f"{listen.rpartition(':')[0]}:{port}"


def main() -> None:
    """Console-script entry point of ``firsthop-scheduler``."""
    app(prog_name="firsthop-scheduler")
