"""What a health probe reads: the :class:`GpuProbe` and :class:`HostProbe` protocols and their
readings.

Readings are frozen dataclasses of plain values, so the verdict (:mod:`agents.health.verdict`)
is a pure function of them and tests build them directly. A field a GPU does not support (row
remapping before Ampere, NVLink on a PCIe card, ECC with ECC disabled) is ``None``, never a
made-up zero. Implementations: :mod:`agents.health.nvml` (real GPUs),
:mod:`agents.health.host` (real host) and :mod:`agents.health.fake` (tests and demos).

Must not import ``scheduler``, torch or pynvml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class ThrottleReason(StrEnum):
    """Why the GPU's clocks are below their maximum (NVML "clocks event reasons").

    Values are stable names; :mod:`agents.health.nvml` maps NVML's bit mask onto them.
    """

    GPU_IDLE = "gpu_idle"
    APPLICATIONS_CLOCKS_SETTING = "applications_clocks_setting"
    SW_POWER_CAP = "sw_power_cap"
    HW_SLOWDOWN = "hw_slowdown"
    """Hardware slowdown (clocks cut by half or more): high temperature, power brake or PSU."""
    SYNC_BOOST = "sync_boost"
    SW_THERMAL_SLOWDOWN = "sw_thermal_slowdown"
    HW_THERMAL_SLOWDOWN = "hw_thermal_slowdown"
    HW_POWER_BRAKE_SLOWDOWN = "hw_power_brake_slowdown"
    DISPLAY_CLOCK_SETTING = "display_clock_setting"


@dataclass(frozen=True, slots=True)
class EccCounts:
    """ECC error totals of one GPU (``None``: not supported or ECC disabled).

    Attributes:
        volatile_corrected: corrected (single-bit) errors since the last driver load.
        volatile_uncorrected: uncorrected (double-bit) errors since the last driver load.
        aggregate_corrected: corrected errors over the GPU's lifetime.
        aggregate_uncorrected: uncorrected errors over the GPU's lifetime.
    """

    volatile_corrected: int | None = None
    volatile_uncorrected: int | None = None
    aggregate_corrected: int | None = None
    aggregate_uncorrected: int | None = None


@dataclass(frozen=True, slots=True)
class RemappedRows:
    """HBM row remapping state of one GPU (Ampere and newer).

    Attributes:
        correctable: rows remapped because of correctable errors.
        uncorrectable: rows remapped because of uncorrectable errors.
        pending: a remap is waiting for a GPU reset to take effect.
        failure: a remap has failed at some point (no spare rows left in a bank).
    """

    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One poll of one GPU.

    Attributes:
        index: NVML index (PCI bus order; the agent runs ranks with
            ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA indexes agree).
        name: marketing name, e.g. ``"NVIDIA H100 80GB HBM3"``.
        uuid: ``GPU-...`` UUID.
        lost: why the GPU could not be read (fell off the bus, needs a reset), or ``None``.
            When set, every other measured field is ``None``.
        temperature_c: GPU core temperature in degrees Celsius.
        power_w: current board power draw in watts.
        power_limit_w: enforced power limit in watts.
        ecc: ECC error totals (fields ``None`` when unsupported).
        remapped_rows: row remapping state, ``None`` before Ampere or with MIG instances.
        xid_events: XID codes of critical events since the previous poll, in arrival order;
            ``None`` when event registration is not supported.
        throttle_reasons: active clock throttle reasons, ``None`` when not readable.
        nvlink_up: per NVLink link present at startup, whether it is active; ``None`` when the
            GPU has no NVLink (PCIe cards) or the query is not supported.
        memory_total_bytes: framebuffer size.
        memory_used_bytes: framebuffer in use.
        probe_errors: fields whose query failed with an unexpected error (not "not
            supported"), as ``"field: message"`` strings.
    """

    index: int
    name: str
    uuid: str
    lost: str | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    ecc: EccCounts = field(default_factory=EccCounts)
    remapped_rows: RemappedRows | None = None
    xid_events: tuple[int, ...] | None = None
    throttle_reasons: frozenset[ThrottleReason] | None = None
    nvlink_up: tuple[bool, ...] | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    probe_errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostReading:
    """One poll of the host itself.

    Attributes:
        checkpoint_path: the path whose file system holds job checkpoints.
        disk_total_bytes: size of that file system (``None`` when unreadable).
        disk_free_bytes: bytes available to unprivileged users on it.
        mem_total_bytes: ``MemTotal`` of ``/proc/meminfo``.
        mem_available_bytes: ``MemAvailable`` of ``/proc/meminfo``.
        load_1m: 1-minute load average.
        load_5m: 5-minute load average.
        load_15m: 15-minute load average.
        cpu_count: logical CPUs.
        probe_errors: what could not be read, as ``"field: message"`` strings.
    """

    checkpoint_path: str
    disk_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    load_1m: float | None = None
    load_5m: float | None = None
    load_15m: float | None = None
    cpu_count: int | None = None
    probe_errors: tuple[str, ...] = ()


@runtime_checkable
class GpuProbe(Protocol):
    """Reads every GPU of the host. Opened by its implementation, closed with :meth:`close`."""

    def read(self) -> tuple[GpuReading, ...]:
        """Poll every GPU once.

        Returns:
            One reading per GPU the probe can see, by index. A GPU that vanished from the bus
            may be absent or present with ``lost`` set; the verdict treats both as lost.
        """
        ...

    def close(self) -> None:
        """Release the probe's resources. Idempotent."""
        ...


@runtime_checkable
class HostProbe(Protocol):
    """Reads the host's disk (checkpoint path), memory and load."""

    def read(self) -> HostReading:
        """Poll the host once. Never raises for an unreadable field: it is ``None`` instead."""
        ...
