"""The cluster CA and its certificates, checked with cryptography and with a real gRPC mTLS
handshake on a loopback port."""

from __future__ import annotations

import stat
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from scheduler.cli.ctl import app
from scheduler.security.certs import (
    CertificateError,
    init_ca,
    issue_agent,
    issue_server,
    peer_of_pem,
)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_issued_certificates_chain_to_the_ca_and_say_who_they_are(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    server = issue_server(tmp_path, "sched-a", ["sched-a.example", "127.0.0.1"])
    agent = issue_agent(tmp_path, "h001")
    ca_cert = _load(ca.cert)

    for issued in (server, agent):
        cert = _load(issued.cert)
        cert.verify_directly_issued_by(ca_cert)
        assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(issued.cert.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.key.stat().st_mode) == 0o600
    server_cert = _load(server.cert)
    sans = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["sched-a.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = server_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    peer = peer_of_pem(agent.cert.read_bytes())
    assert (peer.common_name, peer.unit) == ("h001", "agent")


def test_nothing_is_overwritten_without_force_and_a_missing_ca_is_a_clear_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(CertificateError) as missing:
        issue_agent(tmp_path, "h001")
    init_ca(tmp_path)
    first = issue_agent(tmp_path, "h001").cert.read_bytes()
    with pytest.raises(CertificateError) as exists:
        issue_agent(tmp_path, "h001")
    with pytest.raises(CertificateError) as bad_name:
        issue_agent(tmp_path, "../etc/passwd")

    assert missing.value.reason == "no_ca"
    assert exists.value.reason == "certificate_exists"
    assert bad_name.value.reason == "invalid_name"
    assert (tmp_path / "h001.crt").read_bytes() == first
    assert issue_agent(tmp_path, "h001", force=True).cert.read_bytes() != first


def _serve(tmp_path: Path) -> tuple[grpc.Server, int]:
    server_files = issue_server(tmp_path, "sched", ["localhost", "127.0.0.1"])
    credentials = grpc.ssl_server_credentials(
        [(server_files.key.read_bytes(), server_files.cert.read_bytes())],
        root_certificates=(tmp_path / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _check(port: int, ca: Path, cert: Path | None, key: Path | None) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_grpc_mutual_tls_accepts_our_agents_and_refuses_strangers(tmp_path: Path) -> None:
    init_ca(tmp_path)
    agent = issue_agent(tmp_path, "h001")
    other = tmp_path / "other"
    init_ca(other)
    stranger = issue_agent(other, "h001")
    server, port = _serve(tmp_path)
    try:
        ours = _check(port, tmp_path / "ca.crt", agent.cert, agent.key)
        anonymous = _check(port, tmp_path / "ca.crt", None, None)
        foreign = _check(port, tmp_path / "ca.crt", stranger.cert, stranger.key)
    finally:
        server.stop(None)

    assert ours == grpc.StatusCode.OK
    assert anonymous == grpc.StatusCode.UNAVAILABLE
    assert foreign == grpc.StatusCode.UNAVAILABLE


def test_the_cli_creates_a_ca_and_issues_certificates(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir = tmp_path / "ca"
    init = runner.invoke(app, ["certs", "init", "--dir", str(ca_dir), "-o", "json"])
    agent = runner.invoke(app, ["certs", "issue-agent", "h007", "--dir", str(ca_dir)])
    again = runner.invoke(app, ["certs", "issue-agent", "h007", "--dir", str(ca_dir)])
    server = runner.invoke(
        app, ["certs", "issue-server", "s1", "--san", "127.0.0.1", "--dir", str(ca_dir)]
    )

    assert init.exit_code == 0, init.output
    assert '"cert"' in init.output
    assert agent.exit_code == 0, agent.output
    assert isinstance(
        x509.load_pem_x509_certificate((ca_dir / "h007.crt").read_bytes()).public_key(),
        ec.EllipticCurvePublicKey,
    )
    assert again.exit_code == 2
    assert "certificate_exists" in again.output
    assert server.exit_code == 0, server.output
    assert (ca_dir / "s1.key").exists()
    slurm = runner.invoke(app, ["certs", "issue-slurm", "--dir", str(ca_dir)])
    assert slurm.exit_code == 0, slurm.output
    peer = peer_of_pem((ca_dir / "slurm.crt").read_bytes())
    assert (peer.common_name, peer.unit) == ("slurm", "slurm")
