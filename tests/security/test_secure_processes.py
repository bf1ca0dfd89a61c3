"""The real programs with TLS, tokens and agent certificates, as docs/security.md deploys them.

- ``firsthopctl certs`` makes the CA and certificates; ``firsthop-scheduler`` serves users over
  TLS and agents on a port that requires client certificates, and writes the first admin's
  token to a bootstrap file;
- the admin adds a user with ``firsthopctl users add``; the user submits with ``--token`` and
  ``--ca`` and the job is theirs; without a token the call is refused; ``firsthopctl audit``
  shows who did what; a revoked token is refused;
- an agent with its host's certificate connects; one claiming another host is refused;
- a non-loopback listen address without TLS is refused unless ``--insecure``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.harness.procs import BIN, WAIT_S, Proc
from topology.generators import fat_tree
from topology.spec import dump_spec

pytestmark = pytest.mark.e2e


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_tls_tokens_roles_audit_and_agent_certificates(tmp_path: Path) -> None:
    topology = tmp_path / "cluster.yaml"
    dump_spec(fat_tree(1, 2, 2, gpus_per_host=8), topology)
    pki = tmp_path / "pki"
    for argv in (
        ("firsthopctl", "certs", "init", "--dir", str(pki)),
        (
            "firsthopctl",
            "certs",
            "issue-server",
            "scheduler",
            "--dir",
            str(pki),
            "--san",
            "127.0.0.1",
        ),
        ("firsthopctl", "certs", "issue-agent", "h0001", "--dir", str(pki)),
    ):
        done = _run(*argv)
        assert done.returncode == 0, done.stderr
    bootstrap = tmp_path / "admin.token"
    scheduler = Proc(
        [
            str(BIN / "firsthop-scheduler"),
            "--listen", "127.0.0.1:0",
            "--agent-listen", "127.0.0.1:0",
            "--db", f"sqlite:///{tmp_path / 'firsthop.db'}",
            "--topology", str(topology),
            "--tls-cert", str(pki / "scheduler.crt"),
            "--tls-key", str(pki / "scheduler.key"),
            "--client-ca", str(pki / "ca.crt"),
            "--bootstrap-admin", str(bootstrap),
        ],
        tmp_path / "scheduler.log",
    )  # fmt: skip
    agents: list[Proc] = []
    try:
        address = scheduler.wait_line("listening on ").split()[-1]
        agent_address = scheduler.wait_line("agents listening on ").split()[-1]
        assert (bootstrap.stat().st_mode & 0o777) == 0o600
        ca = {"FIRSTHOP_CA": str(pki / "ca.crt"), "FIRSTHOP_SERVER": address, "HOME": str(tmp_path)}
        admin = {**ca, "FIRSTHOP_TOKEN_FILE": str(bootstrap)}

        added = _run("firsthopctl", "users", "add", "alice", "--role", "user", env=admin)
        assert added.returncode == 0, added.stderr
        alice = added.stdout.split()[-1]
        job_file = tmp_path / "job.yaml"
        job_file.write_text("name: tiny\ngpus: 8\ncommand: [train]\n")

        anonymous = _run("firsthop", "submit", str(job_file), env=ca)
        assert anonymous.returncode == 2
        assert "error: unauthenticated:" in anonymous.stderr

        submitted = _run("firsthop", "--token", alice, "submit", str(job_file), env=ca)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.split()[-1]
        status = _run("firsthop", "--token", alice, "status", job_id, "--output", "json", env=ca)
        assert json.loads(status.stdout)["user"] == "alice"

        trail = _run("firsthopctl", "audit", "--output", "json", env=admin)
        entries = json.loads(trail.stdout)
        assert {"who": "alice", "method": "JobService/SubmitJob", "result": "ok"}.items() <= {
            k: v for e in entries if e["who"] == "alice" for k, v in e.items()
        }.items()
        assert any(e["method"] == "AccessService/AddUser" and e["who"] == "admin" for e in entries)
        logs = (tmp_path / "scheduler.log").read_text() + trail.stdout
        assert alice.split(".")[-1] not in logs
        assert bootstrap.read_text().strip().split(".")[-1] not in logs

        for host in ("h0001", "h0002"):
            agents.append(
                Proc(
                    [
                        str(BIN / "firsthop-agent"),
                        "run",
                        "--server",
                        agent_address,
                        "--host",
                        host,
                        "--fake-gpus",
                        "8",
                        "--cert",
                        str(pki / "h0001.crt"),
                        "--key",
                        str(pki / "h0001.key"),
                        "--ca",
                        str(pki / "ca.crt"),
                        "--log-dir",
                        str(tmp_path / f"logs-{host}"),
                        "--run-as-agent",
                    ],
                    tmp_path / f"agent-{host}.log",
                )
            )
        agents[0].wait_line("agent h0001 connected")
        assert agents[1].popen.wait(WAIT_S) == 2
        assert "wrong_host" in (tmp_path / "agent-h0002.log").read_text()

        assert _run("firsthopctl", "users", "revoke", "alice", env=admin).returncode == 0
        revoked = _run("firsthop", "--token", alice, "list", env=ca)
        assert revoked.returncode == 2
        assert "revoked_token" in revoked.stderr
    finally:
        for agent in agents:
            agent.stop()
        assert scheduler.stop() == 0


def test_a_public_address_needs_tls_or_insecure(tmp_path: Path) -> None:
    topology = tmp_path / "cluster.yaml"
    dump_spec(fat_tree(1, 1, 2, gpus_per_host=8), topology)
    base = ["--db", "memory://", "--topology", str(topology), "--listen", "0.0.0.0:0"]
    refused = _run("firsthop-scheduler", *base)
    assert refused.returncode == 2
    assert "error: insecure_listen:" in refused.stderr
    proc = Proc([str(BIN / "firsthop-scheduler"), *base, "--insecure"], tmp_path / "s.log")
    try:
        proc.wait_line("listening on ")
        proc.wait_line("insecure local mode")
    finally:
        assert proc.stop() == 0
    assert "INSECURE" in (tmp_path / "s.log").read_text()
