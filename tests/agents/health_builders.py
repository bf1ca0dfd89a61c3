"""Builders of health readings for the agent health tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.health.probe import EccCounts, GpuReading, HostReading, RemappedRows

GIB = 1024**3


def gpu(index: int = 0, **changes: Any) -> GpuReading:
    """A healthy, idle H100 reading (figures of shared/data/gpu/README.md), with changes."""
    reading = GpuReading(
        index=index,
        name="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-test-{index}",
        temperature_c=34,
        power_w=72.0,
        power_limit_w=700.0,
        ecc=EccCounts(0, 0, 0, 0),
        remapped_rows=RemappedRows(0, 0, pending=False, failure=False),
        xid_events=(),
        throttle_reasons=frozenset(),
        nvlink_up=(True,) * 18,
        memory_total_bytes=80 * GIB,
        memory_used_bytes=GIB // 2,
    )
    return dataclasses.replace(reading, **changes)


def gpus(count: int = 8) -> tuple[GpuReading, ...]:
    """``count`` healthy GPUs."""
    return tuple(gpu(i) for i in range(count))


def host(**changes: Any) -> HostReading:
    """A roomy, idle host reading, with changes."""
    reading = HostReading(
        checkpoint_path="/checkpoints",
        disk_total_bytes=1000 * GIB,
        disk_free_bytes=500 * GIB,
        mem_total_bytes=512 * GIB,
        mem_available_bytes=480 * GIB,
        load_1m=1.0,
        load_5m=1.0,
        load_15m=1.0,
        cpu_count=64,
    )
    return dataclasses.replace(reading, **changes)


def replace_gpu(
    readings: tuple[GpuReading, ...], index: int, **changes: Any
) -> tuple[GpuReading, ...]:
    """``readings`` with GPU ``index`` changed."""
    return tuple(dataclasses.replace(r, **changes) if r.index == index else r for r in readings)
