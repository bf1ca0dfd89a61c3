"""``firsthop-agent run`` without ``--address`` advertises an address that works: the host name
when it resolves, else the local address used to reach the scheduler, else the host name with
a warning (never silently a name that makes a job hang in rendezvous)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

import agents.cli
from agents.address import advertised_address, resolves, route_source, split_server
from agents.cli import app
from agents.node import NodeAgent

SERVER = "10.0.0.1:50051"


def test_a_given_address_wins() -> None:
    chosen = advertised_address("h1", SERVER, "10.9.9.9", resolve=lambda _: True)

    assert (chosen.address, chosen.source, chosen.warning) == ("10.9.9.9", "given", "")


def test_the_host_name_when_it_resolves() -> None:
    chosen = advertised_address("h1", SERVER, resolve=lambda name: name == "h1")

    assert (chosen.address, chosen.warning) == ("h1", "")


def test_an_unresolvable_name_falls_back_to_the_route_to_the_scheduler() -> None:
    routes: list[tuple[str, int]] = []

    def route(host: str, port: int) -> str:
        routes.append((host, port))
        return "10.0.0.7"

    chosen = advertised_address("fake-h1", SERVER, resolve=lambda _: False, route=route)

    assert (chosen.address, chosen.source, chosen.warning) == (
        "10.0.0.7",
        "route to the scheduler",
        "",
    )
    assert routes == [("10.0.0.1", 50051)]


def test_no_resolution_and_no_route_warns() -> None:
    chosen = advertised_address(
        "fake-h1", "sched:50051", resolve=lambda _: False, route=lambda *_: None
    )

    assert chosen.address == "fake-h1"
    assert "does not resolve" in chosen.warning
    assert "--address" in chosen.warning


def test_the_real_lookups_on_this_machine() -> None:
    assert resolves("localhost")
    assert not resolves("no-such-host.firsthop.invalid")
    assert route_source("127.0.0.1", 9) == "127.0.0.1"
    assert split_server("[::1]:5") == ("::1", 5)
    assert split_server("nohost") is None


def test_the_agent_cli_warns_at_registration_when_nothing_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[str] = []

    async def run_agent(agent: NodeAgent) -> None:  # registration itself needs a scheduler
        started.append(agent.identity.address)

    monkeypatch.setattr(agents.cli, "_run_agent", run_agent)
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(
            app,
            [
                "run",
                "--server",
                "no-such-scheduler.firsthop.invalid:50051",
                "--host",
                "no-such-host.firsthop.invalid",
                "--fake-gpus",
                "1",
                "--log-dir",
                str(tmp_path),
            ],
        )

    assert result.exit_code == 0, result.output
    assert started == ["no-such-host.firsthop.invalid"]
    assert "does not resolve" in caplog.text


def test_the_agent_cli_advertises_its_route_for_an_unresolvable_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    async def run_agent(agent: NodeAgent) -> None:
        started.append(agent.identity.address)

    monkeypatch.setattr(agents.cli, "_run_agent", run_agent)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--server",
            "127.0.0.1:50051",
            "--host",
            "fake-h1.firsthop.invalid",
            "--fake-gpus",
            "1",
            "--log-dir",
            str(tmp_path),
        ],
    )

    assert result.exit_code == 0, result.output
    assert started == ["127.0.0.1"]
