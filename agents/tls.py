"""The agent's channel to the scheduler: plain on loopback (the demo), mutual TLS otherwise.

``firsthop-agent run --cert FILE --key FILE --ca FILE`` presents the host's certificate
(``firsthopctl certs issue-agent HOST``) to the scheduler's agents' port (``--agent-listen``)
and checks the scheduler's certificate against the cluster CA. The scheduler lets an agent
speak only for the host named in its certificate.

Must not import ``scheduler`` (agents reach the scheduler only over gRPC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from topology.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class AgentTls:
    """PEM files of the agent's mutual TLS: its certificate, key, and the cluster CA."""

    cert: Path
    key: Path
    ca: Path

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials from the files.

        Raises:
            InvalidInputError: ``invalid_tls_config`` for a file that cannot be read.
        """
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca),
            private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )


def tls_of(cert: Path | None, key: Path | None, ca: Path | None) -> AgentTls | None:
    """The TLS settings of ``--cert --key --ca`` (all three, or none).

    Raises:
        InvalidInputError: ``invalid_tls_config`` when only some are given.
    """
    given = [cert, key, ca]
    if all(p is None for p in given):
        return None
    if cert is None or key is None or ca is None:
        raise InvalidInputError(
            "mutual TLS needs all of --cert, --key and --ca", reason="invalid_tls_config"
        )
    return AgentTls(cert, key, ca)


def open_channel(
    server: str, tls: AgentTls | None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``server`` (TLS when ``tls`` is given)."""
    if tls is None:
        return grpc.aio.insecure_channel(server, options=list(options))
    return grpc.aio.secure_channel(server, tls.credentials(), options=list(options))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror}", reason="invalid_tls_config"
        ) from None
