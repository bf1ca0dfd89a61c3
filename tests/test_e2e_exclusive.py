"""One scheduler per port and per store: a second one is refused with a clear error.

- A second ``firsthop-scheduler`` on the same port and SQLite store exits 2 with
  ``error: store_locked: ...`` (an exclusive lock on the store) and the first keeps serving.
- A second one on the same port with another store exits 2 with ``error: address_in_use``
  (no ``SO_REUSEPORT``: gRPC's default would let both listen and split the clients).
- ``--listen 0.0.0.0:0`` prints the address it bound (every interface), not a loopback one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from server_builders import spec

from bench.harness.procs import BIN, WAIT_S, Proc
from scheduler.client import FirsthopClient, JobState
from topology.generators import fat_tree
from topology.spec import dump_spec

pytestmark = pytest.mark.e2e


@pytest.fixture
def topology_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    dump_spec(fat_tree(1, 1, 2, gpus_per_host=8), path)
    return path


def _argv(listen: str, db: Path, topology: Path) -> list[str]:
    return [
        str(BIN / "firsthop-scheduler"),
        "--listen",
        listen,
        "--db",
        f"sqlite:///{db}",
        "--topology",
        str(topology),
        "--log-level",
        "WARNING",
    ]


def _second(listen: str, db: Path, topology: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(listen, db, topology), capture_output=True, text=True, timeout=WAIT_S, check=False
    )


def test_a_second_scheduler_on_the_same_port_and_store_is_refused(
    tmp_path: Path, topology_file: Path
) -> None:
    db = tmp_path / "firsthop.db"
    first = Proc(_argv("127.0.0.1:0", db, topology_file), tmp_path / "first.log")
    try:
        address = first.wait_line("listening on ").split()[-1]
        same_both = _second(address, db, topology_file)
        same_port = _second(address, tmp_path / "other.db", topology_file)
        with FirsthopClient(address) as client:
            job, _ = client.submit_job(spec(8))
            state = client.get_job(job.id).state
    finally:
        assert first.stop() == 0

    assert same_both.returncode == 2, same_both.stderr
    assert same_both.stderr.strip().splitlines()[-1].startswith("error: store_locked: ")
    assert str(db) in same_both.stderr
    assert "listening" not in same_both.stdout
    assert same_port.returncode == 2, same_port.stderr
    assert same_port.stderr.strip().splitlines()[-1].startswith("error: address_in_use: ")
    assert "listening" not in same_port.stdout
    assert "Traceback" not in same_both.stderr + same_port.stderr
    assert state is JobState.PENDING  # the first one kept serving


def test_the_store_lock_is_released_when_the_scheduler_exits(
    tmp_path: Path, topology_file: Path
) -> None:
    db = tmp_path / "firsthop.db"
    first = Proc(_argv("127.0.0.1:0", db, topology_file), tmp_path / "first.log")
    first.wait_line("listening on ")
    assert first.stop() == 0
    again = Proc(_argv("127.0.0.1:0", db, topology_file), tmp_path / "again.log")
    try:
        line = again.wait_line("listening on ")
    finally:
        assert again.stop() == 0

    assert line.startswith("listening on 127.0.0.1:")


def test_listening_on_every_interface_prints_what_was_bound(
    tmp_path: Path, topology_file: Path
) -> None:
    proc = Proc(_argv("0.0.0.0:0", tmp_path / "firsthop.db", topology_file), tmp_path / "s.log")
    try:
        line = proc.wait_line("listening on ")
        port = line.rsplit(":", 1)[-1]
        with FirsthopClient(f"127.0.0.1:{port}") as client:
            nodes = client.list_nodes()
    finally:
        assert proc.stop() == 0

    assert line == f"listening on 0.0.0.0:{port}"
    assert int(port) > 0
    assert len(nodes) == 2
