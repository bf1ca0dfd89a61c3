"""The Prolog's fast health check: the agents' GPU and host probes and their verdict.

One poll of the GPU probe and the host probe, judged by :func:`agents.health.verdict.verdict`
(the same probes and thresholds as ``firsthop-agent``). Which GPU probe: when
``STATE_DIR/fake-probe/<node>.env`` exists the node has fake GPUs (hosts without GPUs: CI,
demos; the Prolog's environment is not ours to set, so a file chooses), otherwise NVML.

The fake-probe file holds ``KEY=VALUE`` lines: ``FIRSTHOP_FAKE_GPUS=N`` and any number of
``FIRSTHOP_FAKE_FAULT=...`` lines (several faults may also share one line, separated by
spaces), each in ``firsthop-agent --fake-fault`` syntax ``POLL:KIND:GPU[:ARG...]``. The
Prolog's check is poll 1 and the Epilog's is poll 2, so ``1:ecc:0:0:1`` is a GPU that is
broken when the job starts and ``2:ecc:0:0:1`` one that breaks during the job.

Must not import ``scheduler``, grpc or torch.
"""

from __future__ import annotations

from pathlib import Path

from agents.health.errors import HealthProbeError
from agents.health.fake import FakeGpuProbe, Fault, parse_fault
from agents.health.host import LinuxHostProbe
from agents.health.probe import GpuProbe, GpuReading
from agents.health.verdict import HealthThresholds, Verdict, verdict
from agents.slurm.state import fake_probe_file
from topology.errors import InvalidInputError

PROLOG_POLL = 1
EPILOG_POLL = 2


def parse_fake_probe(text: str) -> tuple[int, dict[int, list[Fault]]]:
    """GPU count and fault schedule of a fake-probe file.

    Raises:
        InvalidInputError: ``invalid_fake_fault`` for a missing or bad count or fault.
    """
    count: int | None = None
    schedule: dict[int, list[Fault]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep:
            raise InvalidInputError(f"bad fake-probe line {line!r}", reason="invalid_fake_fault")
        if key == "FIRSTHOP_FAKE_GPUS":
            if not value.strip().isdigit() or int(value) < 1:
                raise InvalidInputError(
                    f"FIRSTHOP_FAKE_GPUS={value!r} is not a positive integer",
                    reason="invalid_fake_fault",
                )
            count = int(value)
        elif key == "FIRSTHOP_FAKE_FAULT":
            for item in value.split():
                poll, colon, fault = item.partition(":")
                if not colon or not poll.isdigit() or int(poll) < 1:
                    raise InvalidInputError(
                        f"bad fake fault {item!r}: expected POLL:KIND:GPU[:ARG...]",
                        reason="invalid_fake_fault",
                    )
                schedule.setdefault(int(poll), []).append(parse_fault(fault))
        else:
            raise InvalidInputError(f"unknown fake-probe key {key!r}", reason="invalid_fake_fault")
    if count is None:
        raise InvalidInputError("FIRSTHOP_FAKE_GPUS missing", reason="invalid_fake_fault")
    return count, schedule


def open_probe(state_dir: Path, node: str) -> tuple[GpuProbe, str]:
    """The node's GPU probe and its kind (``fake`` or ``nvml``).

    Raises:
        InvalidInputError: a bad fake-probe file.
        HealthProbeError: NVML cannot be used (``nvml_unavailable``).
    """
    path = fake_probe_file(state_dir, node)
    if path.exists():
        count, schedule = parse_fake_probe(path.read_text())
        return FakeGpuProbe(count, seed=node, schedule=schedule), "fake"
    from agents.health.nvml import NvmlGpuProbe

    return NvmlGpuProbe.open(), "nvml"


def fast_check(
    state_dir: Path,
    node: str,
    *,
    poll: int = PROLOG_POLL,
    expected_gpus: int | None = None,
    checkpoint_path: Path = Path("/"),
    thresholds: HealthThresholds | None = None,
) -> Verdict:
    """One judged poll of this node (the ``poll``-th for a fake probe).

    Raises:
        InvalidInputError: a bad fake-probe file.
        HealthProbeError: the GPU probe cannot be opened or read.
    """
    limits = (thresholds or HealthThresholds()).model_copy(update={"expected_gpus": expected_gpus})
    probe, _ = open_probe(state_dir, node)
    try:
        gpus: tuple[GpuReading, ...] = ()
        for _ in range(max(poll, 1)):
            gpus = probe.read()
    finally:
        probe.close()
    host = LinuxHostProbe(checkpoint_path).read()
    return verdict(gpus, host, None, limits)


def summary(result: Verdict) -> str:
    """One line: the worst reason's code and message (``healthy`` when none)."""
    if not result.reasons:
        return "healthy"
    worst = result.reasons[0]
    more = f" (+{len(result.reasons) - 1} more)" if len(result.reasons) > 1 else ""
    return f"{worst.code}: {worst.message}{more}"


__all__ = ["EPILOG_POLL", "PROLOG_POLL", "HealthProbeError", "fast_check", "summary"]
