"""The Slurm plug-in's hooks over mutual TLS: a certificate with ``OU=slurm`` reaches the
SlurmService on the agents' port; an agent's certificate or no certificate does not."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agents.slurm.comment import JobShape
from agents.slurm.config import ConfigError, HookConfig
from agents.slurm.ctld import allocation_table
from agents.slurm.errors import OutageError
from agents.slurm.hooks import HookContext
from agents.slurm.install import render
from agents.slurm.remote import ServerPublisher
from agents.tls import AgentTls
from scheduler.security.certs import issue_slurm
from tests.security.secure_builders import AGENT_HOST, secure_cluster
from tests.slurm.slurm_builders import lab, lab_spec
from topology.errors import InvalidInputError
from topology.spec import dump_spec


def _tls(ca_dir: Path, name: str) -> AgentTls:
    return AgentTls(ca_dir / f"{name}.crt", ca_dir / f"{name}.key", ca_dir / "ca.crt")


async def test_the_hooks_publish_with_a_slurm_certificate_and_nothing_else_does(
    tmp_path: Path,
) -> None:
    async with secure_cluster(tmp_path) as cluster:
        issue_slurm(tmp_path, "slurm-hooks")
        address = cluster.server.agent_address
        assert address is not None
        computed = allocation_table(lab(), "31", ["n1", "n2"], JobShape({"tp": 4, "dp": 2}))

        hooks = ServerPublisher(address, tls=_tls(tmp_path, "slurm-hooks"))
        assert await asyncio.to_thread(hooks.publish, computed.table) == f"firsthop://{address}"
        for node, piece in computed.table.slices.items():
            assert await asyncio.to_thread(hooks.fetch_slice, "31", node) == piece.to_text()

        agent = ServerPublisher(address, timeout_s=5.0, tls=_tls(tmp_path, AGENT_HOST))
        with pytest.raises(OutageError, match="PERMISSION_DENIED") as denied:
            await asyncio.to_thread(agent.fetch_slice, "31", "n1")
        assert denied.value.reason == "server_error"

        plain = ServerPublisher(address, timeout_s=5.0)
        with pytest.raises(OutageError) as refused:
            await asyncio.to_thread(plain.fetch_slice, "31", "n1")
        assert refused.value.reason == "server_unavailable"

        assert await asyncio.to_thread(hooks.remove, "31")


async def test_unreadable_tls_files_are_an_outage_not_a_crash(tmp_path: Path) -> None:
    missing = AgentTls(tmp_path / "no.crt", tmp_path / "no.key", tmp_path / "no-ca.crt")
    with pytest.raises(OutageError) as info:
        await asyncio.to_thread(ServerPublisher("127.0.0.1:1", tls=missing).fetch_slice, "1", "n1")
    assert info.value.reason == "invalid_tls_config"


def test_install_writes_the_tls_files_into_the_hook_configuration(tmp_path: Path) -> None:
    topology = tmp_path / "lab.yaml"
    dump_spec(lab_spec(), topology)
    files = (tmp_path / "s.crt", tmp_path / "s.key", tmp_path / "ca.crt")
    plan = render(topology, tmp_path / "plugin", server="ctl:7443", tls=files)
    assert plan.config.tls_files() == tuple(str(f) for f in files)
    loaded = HookConfig.from_dict(json.loads(plan.config.to_json()))
    assert loaded == plan.config
    context = HookContext(loaded, env={}, log=lambda line: None)
    assert isinstance(context.store(), ServerPublisher)

    with pytest.raises(InvalidInputError) as partial:
        render(topology, tmp_path / "plugin", server="ctl:7443", tls=(files[0], None, files[2]))
    assert partial.value.reason == "invalid_tls_config"
    with pytest.raises(InvalidInputError) as no_server:
        render(topology, tmp_path / "plugin", tls=files)
    assert no_server.value.reason == "invalid_tls_config"


def test_the_configuration_refuses_part_of_the_tls_files() -> None:
    base = {"topology": "/t.yaml", "state_dir": "/state"}
    with pytest.raises(ConfigError, match="all three or none"):
        HookConfig.from_dict({**base, "server": "ctl:1", "tls_cert": "/a.crt"})
    with pytest.raises(ConfigError, match="absolute"):
        HookConfig.from_dict(
            {**base, "tls_cert": "a.crt", "tls_key": "/a.key", "tls_ca": "/ca.crt"}
        )
