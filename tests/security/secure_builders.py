"""A real in-process scheduler with TLS, an agents' port that requires client certificates,
and tokens for each role; channels that present each kind of credential."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio

from scheduler.security.certs import init_ca, issue_agent, issue_client, issue_server
from scheduler.security.policy import Role
from scheduler.security.principals import UserToken
from scheduler.security.tokens import new_token
from scheduler.server import SchedulerServer, build_server
from scheduler.store.access import MemoryPrincipals
from scheduler.store.memory import MemoryStore
from tests.server_builders import fast_config, small_topology

AGENT_HOST = "h0001"
OTHER_HOST = "h0002"


@dataclass
class SecureCluster:
    """A started TLS server, its CA directory, and a token per user name."""

    server: SchedulerServer
    ca_dir: Path
    principals: MemoryPrincipals
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def ca(self) -> bytes:
        return (self.ca_dir / "ca.crt").read_bytes()

    def user_channel(self) -> grpc.aio.Channel:
        """TLS to the users' port (no client certificate)."""
        creds = grpc.ssl_channel_credentials(self.ca)
        return grpc.aio.secure_channel(self.server.address, creds)

    def cert_channel(self, name: str) -> grpc.aio.Channel:
        """Mutual TLS to the agents' port with the certificate issued for ``name``."""
        creds = grpc.ssl_channel_credentials(
            self.ca,
            private_key=(self.ca_dir / f"{name}.key").read_bytes(),
            certificate_chain=(self.ca_dir / f"{name}.crt").read_bytes(),
        )
        address = self.server.agent_address
        assert address is not None
        return grpc.aio.secure_channel(address, creds)


def add_token(principals: MemoryPrincipals, user: str, role: Role, *, revoked: bool = False) -> str:
    """Mint and store a token; return it."""
    minted = new_token()
    now = datetime.now(UTC)
    principals.add_token(
        UserToken(minted.token_id, user, role, minted.digest, now, now if revoked else None)
    )
    return minted.token


@contextlib.asynccontextmanager
async def secure_cluster(tmp: Path) -> AsyncIterator[SecureCluster]:
    """The server of the module docstring, stopped on exit."""
    init_ca(tmp)
    issued = issue_server(tmp, "scheduler", ["127.0.0.1", "localhost"])
    issue_agent(tmp, AGENT_HOST)
    issue_agent(tmp, OTHER_HOST)
    issue_client(tmp, "slurmctld", "slurm")
    principals = MemoryPrincipals()
    tokens = {
        "alice": add_token(principals, "alice", Role.USER),
        "bob": add_token(principals, "bob", Role.USER),
        "olga": add_token(principals, "olga", Role.OPERATOR),
        "root": add_token(principals, "root", Role.ADMIN),
        "mallory": add_token(principals, "mallory", Role.USER, revoked=True),
    }
    config = fast_config(
        tls_cert=issued.cert,
        tls_key=issued.key,
        client_ca=tmp / "ca.crt",
        agent_listen="127.0.0.1:0",
    )
    server = build_server(
        config, topology=small_topology(), store=MemoryStore(), principals=principals
    )
    await server.start()
    try:
        yield SecureCluster(server, tmp, principals, tokens)
    finally:
        await server.stop(0)
