"""Bearer tokens for users and operators: minted once, stored only as a digest.

A token reads ``fh1.<id>.<secret>``: ``id`` (12 hex digits) names the token in the store and in
audit records without revealing it; ``secret`` is 32 random bytes (base64url). The store keeps
the id, the user and role, and the SHA-256 digest of the secret. A 256-bit random secret needs
no slow password hash: guessing it is as hard as finding a SHA-256 preimage. Comparison is
constant-time. Tokens travel as gRPC metadata ``authorization: Bearer <token>``.

Must not import gRPC, the generated protos, ``scheduler.core``, ``scheduler.store`` or the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from topology.errors import FirsthopError

PREFIX: Final = "fh1"
AUTHORIZATION: Final = "authorization"
"""The gRPC metadata key (lower case, as gRPC requires)."""
_TOKEN = re.compile(r"^fh1\.([0-9a-f]{12})\.([A-Za-z0-9_-]{43})$")
MAX_HEADER: Final = 256
"""Longer authorization values are refused before any parsing."""


class InvalidTokenError(FirsthopError):
    """A credential that is not a well-formed firsthop token."""

    status_code = "UNAUTHENTICATED"
    default_reason = "invalid_token"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly minted token: show ``token`` once, store ``token_id`` and ``digest``."""

    token: str
    token_id: str
    digest: str


@dataclass(frozen=True, slots=True)
class PresentedToken:
    """A token as a caller presented it, split into its id and secret."""

    token_id: str
    secret: str


def digest_of(secret: str) -> str:
    """SHA-256 of the secret, hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_token() -> NewToken:
    """Mint a token."""
    token_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return NewToken(f"{PREFIX}.{token_id}.{secret}", token_id, digest_of(secret))


def parse_token(token: str) -> PresentedToken:
    """Split a token.

    Raises:
        InvalidTokenError: not of the form ``fh1.<12 hex>.<43 base64url>``.
    """
    match = _TOKEN.match(token) if len(token) <= MAX_HEADER else None
    if match is None:
        raise InvalidTokenError("the credential is not a firsthop token")
    return PresentedToken(match.group(1), match.group(2))


def parse_bearer(value: str) -> PresentedToken:
    """The token of an ``authorization`` metadata value (``Bearer <token>``)."""
    if len(value) > MAX_HEADER:
        raise InvalidTokenError("the authorization value is too long")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise InvalidTokenError("expected 'authorization: Bearer <token>'")
    return parse_token(token.strip())


def matches(presented: PresentedToken, digest: str) -> bool:
    """Whether the presented secret has the stored digest (constant time)."""
    return hmac.compare_digest(digest_of(presented.secret), digest)


def bearer(token: str) -> tuple[str, str]:
    """The metadata pair a client sends."""
    return (AUTHORIZATION, f"Bearer {token}")
