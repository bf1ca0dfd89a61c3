"""The example trainer honours the checkpoint-on-request protocol, as plain local processes.

Two gloo ranks train; the checkpoint signal goes to rank 1 only (the ranks must agree on it);
every rank exits 0 after rank 0 has written and reported a checkpoint newer than the request;
a second run resumes from it and ends with parameters equal to an undisturbed run's.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest
import torch

from bench.harness.procs import Proc, wait_until

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "examples" / "train_ddp_checkpoint.py"
STEPS = 40
WORLD = 2

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(root: Path, name: str, ckpt: Path, step_time: float, extra: dict[str, str]) -> list[Proc]:
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "FIRSTHOP_CHECKPOINT_DIR": str(ckpt),
            **extra,
        }
        argv = [sys.executable, str(TRAIN), "--steps", str(STEPS), "--checkpoint-every", "10"]
        argv += ["--step-time", str(step_time)]
        procs.append(Proc(argv, root / f"{name}-{rank}.log", env))
    return procs


def _exit_codes(procs: list[Proc]) -> list[int]:
    codes = [p.popen.wait(120) for p in procs]
    for p in procs:
        p.stop()  # already exited: only collects the output and closes the log
    return codes


def _reported(report: Path) -> int | None:
    try:
        step, _ = report.read_text().split()
    except (OSError, ValueError):
        return None
    return int(step)


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Final parameters of a run nobody signals."""
    root = tmp_path_factory.mktemp("reference")
    assert _exit_codes(_run(root, "ref", root / "ckpt", 0.0, {})) == [0] * WORLD
    final: dict[str, torch.Tensor] = torch.load(root / "ckpt" / "final.pt", weights_only=True)
    return final


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_a_signalled_job_checkpoints_exits_zero_and_resumes_identically(
    tmp_path: Path, signame: str, undisturbed: dict[str, torch.Tensor]
) -> None:

    ckpt = tmp_path / "job"
    report = tmp_path / "report"
    extra = {"FIRSTHOP_CHECKPOINT_SIGNAL": signame, "FIRSTHOP_CHECKPOINT_REPORT": str(report)}
    first = _run(tmp_path, "first", ckpt, 0.05, extra)
    periodic = wait_until(lambda: _reported(report), "the first periodic checkpoint")
    first[1].popen.send_signal(signal.Signals[signame])
    codes = _exit_codes(first)

    assert codes == [0] * WORLD
    step = _reported(report)
    assert step is not None
    assert periodic < step < STEPS, "a checkpoint newer than the request, before the end"
    assert not (ckpt / "final.pt").exists()
    saved = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    assert int(saved["step"]) == step

    second = _run(tmp_path, "second", ckpt, 0.0, extra)
    assert _exit_codes(second) == [0] * WORLD
    got = torch.load(ckpt / "final.pt", weights_only=True)
    assert got.keys() == undisturbed.keys()
    assert all(torch.equal(got[name], undisturbed[name]) for name in undisturbed)
