"""The cluster's certificate authority: create it, and issue server and agent certificates.

One self-signed CA per cluster signs every certificate; schedulers trust agents whose
certificate it signed (mutual TLS), and clients and agents trust schedulers it signed. What a
certificate says:

- **server** (``issue_server NAME --san ...``): ``CN=NAME``, the subject alternative names given
  (DNS names, or IP addresses when they parse as such), extended key usage *serverAuth*.
- **agent** (``issue_agent HOST``): ``CN=HOST``, ``OU=agent``, ``DNS:HOST`` as its only subject
  alternative name, extended key usage *clientAuth*. The scheduler lets an agent speak only for
  the host in its certificate.
- **slurm** (``issue_client NAME --role slurm``): ``CN=NAME``, ``OU=slurm``, *clientAuth*: the
  Slurm prolog programs' identity.

Keys are ECDSA P-256. Every file is written with mode 0600 (keys are secrets; certificates are
kept as private as their keys so a copied directory never leaks one without the other), through
a temporary file and a rename, and an existing file is never overwritten unless asked.

Must not import gRPC, the generated protos, ``scheduler.core``, ``scheduler.store`` or the API.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from topology.errors import InvalidInputError

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
FILE_MODE: Final = 0o600
AGENT_OU: Final = "agent"
SLURM_OU: Final = "slurm"
"""The unit of the Slurm plug-in's certificates (``firsthopctl certs issue-slurm``)."""
DEFAULT_DAYS: Final = 365
CA_DAYS: Final = 3650


@dataclass(frozen=True, slots=True)
class Issued:
    """Paths of an issued certificate and its key."""

    cert: Path
    key: Path


class CertificateError(InvalidInputError):
    """A CA directory or certificate request that cannot be honoured."""

    status_code = "FAILED_PRECONDITION"
    default_reason = "certificate_error"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    if path.exists() and not force:
        raise CertificateError(
            f"{path} exists; pass --force to replace it", reason="certificate_exists"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init_ca(directory: Path, name: str = "firsthop cluster CA", *, force: bool = False) -> Issued:
    """Create the cluster CA (``ca.crt``, ``ca.key``) in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(directory / CA_CERT, directory / CA_KEY)
    _write_private(issued.key, _key_pem(key), force=force)
    _write_private(issued.cert, _cert_pem(cert), force=force)
    return issued


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as exc:
        raise CertificateError(
            f"no CA in {directory} (run `firsthopctl certs init --dir {directory}` first)",
            reason="no_ca",
        ) from exc
    except ValueError as exc:
        raise CertificateError(
            f"the CA in {directory} cannot be read: {exc}", reason="bad_ca"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"the CA key in {directory} is not an EC key", reason="bad_ca")
    return cert, key


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _check_name(what: str, name: str) -> None:
    if not name or len(name) > 253 or any(c.isspace() or c in "/\\\x00" for c in name):
        raise CertificateError(f"invalid {what} {name[:64]!r}", reason="invalid_name")


def _issue(
    directory: Path,
    out: Path,
    stem: str,
    *,
    subject: x509.Name,
    sans: Sequence[str],
    usage: x509.ObjectIdentifier,
    days: int,
    force: bool,
) -> Issued:
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(_san(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(out / f"{stem}.crt", out / f"{stem}.key")
    _write_private(issued.key, _key_pem(key), force=force)
    _write_private(issued.cert, _cert_pem(cert), force=force)
    return issued


def issue_server(
    directory: Path,
    name: str,
    sans: Sequence[str],
    *,
    out: Path | None = None,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> Issued:
    """A scheduler's certificate (``NAME.crt``, ``NAME.key``), signed by the CA in ``directory``."""
    _check_name("server name", name)
    for san in sans:
        _check_name("subject alternative name", san)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return _issue(
        directory,
        out or directory,
        name,
        subject=subject,
        sans=list(sans) or [name],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
        force=force,
    )


def issue_client(
    directory: Path,
    name: str,
    role: str,
    *,
    out: Path | None = None,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> Issued:
    """A client certificate for ``name`` with ``OU=role`` (``agent`` for agents, ``slurm``)."""
    _check_name("name", name)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    return _issue(
        directory,
        out or directory,
        name,
        subject=subject,
        sans=[name],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
        force=force,
    )


def issue_agent(
    directory: Path,
    host: str,
    *,
    out: Path | None = None,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> Issued:
    """An agent's certificate for ``host`` (``HOST.crt``, ``HOST.key``)."""
    return issue_client(directory, host, AGENT_OU, out=out, days=days, force=force)


def issue_slurm(
    directory: Path,
    name: str,
    *,
    out: Path | None = None,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> Issued:
    """A certificate for the Slurm plug-in's hooks (``NAME.crt``, ``NAME.key``, ``OU=slurm``):
    they may call the SlurmService only."""
    return issue_client(directory, name, SLURM_OU, out=out, days=days, force=force)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the scheduler reads from a client certificate."""

    common_name: str
    unit: str


def peer_of_pem(pem: bytes) -> PeerCertificate:
    """The common name and organisational unit of a PEM certificate (empty when absent)."""
    cert = x509.load_pem_x509_certificate(pem)

    def first(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        value = values[0].value if values else ""
        return value.decode() if isinstance(value, bytes) else str(value)

    return PeerCertificate(first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME))
