"""The health verdict: a pure function from probe readings to HEALTHY, SUSPECT or FAILED.

:func:`verdict` looks at one poll of every GPU and the host (plus, optionally, the previous
poll, for rates and for GPUs that vanished) and returns a :class:`Verdict` whose reasons carry
stable codes (:class:`ReasonCode`). FAILED means "drain this node and move its jobs": the
hardware lost data or needs a reset (uncorrectable ECC, pending row remap, remap failure, a GPU
gone, a critical XID) or jobs cannot checkpoint (disk full). SUSPECT means "give it no new
jobs": it still works but is degraded (thermal or power-brake throttling, hot, correctable
errors rising, an NVLink link down, memory or disk low, a probe error).

XID events are edge-triggered: a reading carries the XIDs since the previous poll, so the
verdict reports a critical XID once; the scheduler latches the node's state (drain) from there.

The health words are local to the agent; the scheduler maps them through
``scheduler.core.states.health_from_external``. Must not import ``scheduler``, torch or pynvml.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from agents.health.probe import GpuReading, HostReading, ThrottleReason


class Health(StrEnum):
    """The agent's verdict on its host (the words ``health_from_external`` accepts)."""

    HEALTHY = "HEALTHY"
    SUSPECT = "SUSPECT"
    FAILED = "FAILED"

    @property
    def rank(self) -> int:
        """0 for HEALTHY, 1 for SUSPECT, 2 for FAILED (worse is larger)."""
        return _RANK[self]


_RANK: Mapping[Health, int] = MappingProxyType(
    {Health.HEALTHY: 0, Health.SUSPECT: 1, Health.FAILED: 2}
)


class ReasonCode(StrEnum):
    """Stable, machine-readable reason codes of a verdict. Never renamed; only added."""

    # FAILED
    ECC_UNCORRECTABLE = "ecc_uncorrectable"
    ROW_REMAP_PENDING = "row_remap_pending"
    ROW_REMAP_FAILURE = "row_remap_failure"
    GPU_LOST = "gpu_lost"
    GPU_MISSING = "gpu_missing"
    XID_CRITICAL = "xid_critical"
    DISK_FULL = "disk_full"
    # SUSPECT
    THROTTLE_HW_SLOWDOWN = "throttle_hw_slowdown"
    THROTTLE_HW_THERMAL = "throttle_hw_thermal"
    THROTTLE_SW_THERMAL = "throttle_sw_thermal"
    THROTTLE_HW_POWER_BRAKE = "throttle_hw_power_brake"
    THROTTLE_SW_POWER_CAP = "throttle_sw_power_cap"
    TEMPERATURE_HIGH = "temperature_high"
    ECC_CORRECTABLE_RISING = "ecc_correctable_rising"
    XID_WARNING = "xid_warning"
    NVLINK_DOWN = "nvlink_down"
    MEMORY_LOW = "memory_low"
    DISK_LOW = "disk_low"
    PROBE_ERROR = "probe_error"


_THROTTLE_CODES: Mapping[ThrottleReason, ReasonCode] = MappingProxyType(
    {
        ThrottleReason.HW_SLOWDOWN: ReasonCode.THROTTLE_HW_SLOWDOWN,
        ThrottleReason.HW_THERMAL_SLOWDOWN: ReasonCode.THROTTLE_HW_THERMAL,
        ThrottleReason.SW_THERMAL_SLOWDOWN: ReasonCode.THROTTLE_SW_THERMAL,
        ThrottleReason.HW_POWER_BRAKE_SLOWDOWN: ReasonCode.THROTTLE_HW_POWER_BRAKE,
        ThrottleReason.SW_POWER_CAP: ReasonCode.THROTTLE_SW_POWER_CAP,
    }
)

# XID codes, from NVIDIA's Xid documentation:
# - Xid catalog for Ampere and newer, https://docs.nvidia.com/deploy/xid-errors/
#   (analyzing-xid-catalog.html: mnemonic, description and resolution bucket per code);
# - Dynamic page retirement, https://docs.nvidia.com/deploy/dynamic-page-retirement/ (48 DBE,
#   63 page retired / row marked for remapping, 64 retirement or remapping failed);
# - A100 GPU memory error management, https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/
#   (94 uncorrectable error contained, 95 uncorrectable error not contained);
# - NVIDIA Health Validation Xid checks,
#   https://docs.nvidia.com/health-validation/reference/checks/xid.html (46 and 48: CRITICAL,
#   drain, reset the GPU).
# On Ampere and newer, 63/64 report row remapping (what pre-Ampere GPUs did by page retirement).
XID_DESCRIPTIONS: Mapping[int, str] = MappingProxyType(
    {
        46: "GPU stopped processing",
        48: "double-bit (uncorrectable) ECC error",
        63: "row remap / page retirement recorded, GPU reset needed to activate",
        64: "row remap / page retirement failed",
        74: "NVLink error",
        79: "GPU has fallen off the bus",
        92: "high single-bit ECC error rate",
        94: "contained uncorrectable ECC error",
        95: "uncontained uncorrectable ECC error",
    }
)
#: XIDs that fail the node by default. 94 (contained) strictly needs no reset per NVIDIA, but
#: the rank that hit it died and the row is remapped only at the next reset; move it to
#: ``suspect_xids`` to keep such GPUs in service.
DEFAULT_FAILED_XIDS = frozenset({46, 48, 63, 64, 74, 79, 94, 95})
#: XIDs that make the node suspect by default: the hardware's own "errors rising" signal.
DEFAULT_SUSPECT_XIDS = frozenset({92})

GIB = 1024**3


class HealthThresholds(BaseModel):
    """Limits of :func:`verdict`. Defaults suit H100-class hosts (idle at 34 C and 72 W).

    Attributes:
        expected_gpus: GPUs the host must show (from its configuration); fewer is FAILED
            ``gpu_missing``. ``None``: not checked.
        max_temperature_c: above this core temperature a GPU is SUSPECT. 85 C stays below the
            H100's slowdown threshold, so it warns before the hardware throttles.
        suspect_throttle_reasons: throttle reasons that make a GPU SUSPECT. Power capping
            (``sw_power_cap``) is left out by default: a busy GPU runs at its power cap.
        correctable_ecc_max_per_hour: volatile corrected ECC errors per hour between two polls
            above which a GPU is SUSPECT ...
        correctable_ecc_min_increase: ... provided at least this many arrived (one stray
            single-bit error in a short interval is not a trend).
        failed_xids: critical XIDs that make the node FAILED.
        suspect_xids: XIDs that make the node SUSPECT.
        disk_full_bytes: free bytes on the checkpoint path below which the node is FAILED.
        disk_low_fraction: free fraction of that file system below which it is SUSPECT.
        memory_low_fraction: ``MemAvailable / MemTotal`` below which the host is SUSPECT.
        suspect_on_probe_error: whether an unexpected probe error makes the node SUSPECT.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    expected_gpus: int | None = Field(default=None, ge=0)
    max_temperature_c: float = Field(default=85.0, gt=0)
    suspect_throttle_reasons: frozenset[ThrottleReason] = frozenset(
        {
            ThrottleReason.HW_SLOWDOWN,
            ThrottleReason.HW_THERMAL_SLOWDOWN,
            ThrottleReason.SW_THERMAL_SLOWDOWN,
            ThrottleReason.HW_POWER_BRAKE_SLOWDOWN,
        }
    )
    correctable_ecc_max_per_hour: float = Field(default=100.0, ge=0)
    correctable_ecc_min_increase: int = Field(default=10, ge=1)
    failed_xids: frozenset[int] = DEFAULT_FAILED_XIDS
    suspect_xids: frozenset[int] = DEFAULT_SUSPECT_XIDS
    disk_full_bytes: int = Field(default=1 * GIB, ge=0)
    disk_low_fraction: float = Field(default=0.05, ge=0, le=1)
    memory_low_fraction: float = Field(default=0.05, ge=0, le=1)
    suspect_on_probe_error: bool = True


@dataclass(frozen=True, slots=True)
class Reason:
    """One finding of a verdict.

    Attributes:
        code: stable machine-readable code.
        health: how bad this finding is on its own (SUSPECT or FAILED).
        message: human-readable detail (may change between versions; never parse it).
        gpu_index: the GPU concerned, ``None`` for host-wide findings.
    """

    code: ReasonCode
    health: Health
    message: str
    gpu_index: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The host's health and why.

    Attributes:
        health: the worst health among the reasons, HEALTHY when there are none.
        reasons: findings, worst first, then by code and GPU index.
    """

    health: Health
    reasons: tuple[Reason, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        """The reason codes as plain strings, in order."""
        return tuple(str(reason.code) for reason in self.reasons)


@dataclass(frozen=True, slots=True)
class PreviousPoll:
    """What the verdict needs from the previous poll.

    Attributes:
        gpus: the previous poll's GPU readings.
        elapsed_s: seconds between that poll and this one (monotonic clock).
    """

    gpus: tuple[GpuReading, ...]
    elapsed_s: float


def verdict(
    gpus: Iterable[GpuReading],
    host: HostReading,
    previous: PreviousPoll | None,
    thresholds: HealthThresholds,
) -> Verdict:
    """Judge one poll of a host.

    Args:
        gpus: this poll's reading of every GPU.
        host: this poll's host reading.
        previous: the previous poll, for correctable-ECC rates and GPUs that vanished since;
            ``None`` on the first poll.
        thresholds: the limits.

    Returns:
        The verdict. Pure: same inputs, same verdict; inputs are not modified.
    """
    readings = tuple(gpus)
    reasons: list[Reason] = []
    reasons.extend(_gpu_count_reasons(readings, previous, thresholds))
    previous_by_uuid = {gpu.uuid: gpu for gpu in previous.gpus} if previous else {}
    for gpu in readings:
        reasons.extend(_gpu_reasons(gpu, thresholds))
        earlier = previous_by_uuid.get(gpu.uuid)
        if earlier is not None and previous is not None:
            reasons.extend(_ecc_rate_reasons(gpu, earlier, previous.elapsed_s, thresholds))
    reasons.extend(_nvlink_peer_reasons(readings))
    reasons.extend(_host_reasons(host, thresholds))
    reasons.sort(key=lambda r: (-r.health.rank, r.code, -1 if r.gpu_index is None else r.gpu_index))
    health = max((r.health for r in reasons), key=lambda h: h.rank, default=Health.HEALTHY)
    return Verdict(health=health, reasons=tuple(reasons))


def _failed(code: ReasonCode, message: str, gpu: int | None = None) -> Reason:
    return Reason(code, Health.FAILED, message, gpu)


def _suspect(code: ReasonCode, message: str, gpu: int | None = None) -> Reason:
    return Reason(code, Health.SUSPECT, message, gpu)


def _gpu_count_reasons(
    readings: tuple[GpuReading, ...], previous: PreviousPoll | None, thresholds: HealthThresholds
) -> list[Reason]:
    reasons: list[Reason] = []
    expected = thresholds.expected_gpus
    if expected is not None and len(readings) < expected:
        reasons.append(
            _failed(ReasonCode.GPU_MISSING, f"{len(readings)} of {expected} expected GPUs visible")
        )
    if previous is not None:
        present = {gpu.uuid for gpu in readings}
        for gone in previous.gpus:
            if gone.uuid and gone.uuid not in present:
                reasons.append(
                    _failed(
                        ReasonCode.GPU_LOST,
                        f"GPU {gone.index} ({gone.uuid}) disappeared since the last poll",
                        gone.index,
                    )
                )
    return reasons


def _gpu_reasons(gpu: GpuReading, t: HealthThresholds) -> list[Reason]:
    i = gpu.index
    reasons = _xid_reasons(gpu, t)
    if gpu.lost is not None:
        reasons.append(_failed(ReasonCode.GPU_LOST, f"GPU {i} unreadable: {gpu.lost}", i))
        return reasons
    uncorrected = gpu.ecc.volatile_uncorrected
    if uncorrected:
        reasons.append(
            _failed(
                ReasonCode.ECC_UNCORRECTABLE,
                f"GPU {i}: {uncorrected} uncorrectable ECC errors since driver load",
                i,
            )
        )
    rows = gpu.remapped_rows
    if rows is not None and rows.pending:
        reasons.append(
            _failed(ReasonCode.ROW_REMAP_PENDING, f"GPU {i}: row remap pending a GPU reset", i)
        )
    if rows is not None and rows.failure:
        reasons.append(_failed(ReasonCode.ROW_REMAP_FAILURE, f"GPU {i}: a row remap failed", i))
    for reason in sorted(gpu.throttle_reasons or ()):
        code = _THROTTLE_CODES.get(reason)
        if code is not None and reason in t.suspect_throttle_reasons:
            reasons.append(_suspect(code, f"GPU {i}: clocks throttled ({reason})", i))
    if gpu.temperature_c is not None and gpu.temperature_c > t.max_temperature_c:
        reasons.append(
            _suspect(
                ReasonCode.TEMPERATURE_HIGH,
                f"GPU {i}: {gpu.temperature_c} C above {t.max_temperature_c:g} C",
                i,
            )
        )
    links = gpu.nvlink_up
    if links is not None and any(links) and not all(links):
        down = [n for n, up in enumerate(links) if not up]
        reasons.append(
            _suspect(
                ReasonCode.NVLINK_DOWN,
                f"GPU {i}: NVLink links {down} down while {sum(links)} are up",
                i,
            )
        )
    if gpu.probe_errors and t.suspect_on_probe_error:
        reasons.append(
            _suspect(ReasonCode.PROBE_ERROR, f"GPU {i}: {'; '.join(gpu.probe_errors)}", i)
        )
    return reasons


def _xid_reasons(gpu: GpuReading, t: HealthThresholds) -> list[Reason]:
    reasons: list[Reason] = []
    for xid in sorted(set(gpu.xid_events or ())):
        what = XID_DESCRIPTIONS.get(xid, "see NVIDIA's Xid catalog")
        message = f"GPU {gpu.index}: XID {xid} ({what})"
        if xid in t.failed_xids:
            reasons.append(_failed(ReasonCode.XID_CRITICAL, message, gpu.index))
        elif xid in t.suspect_xids:
            reasons.append(_suspect(ReasonCode.XID_WARNING, message, gpu.index))
    return reasons


def _ecc_rate_reasons(
    gpu: GpuReading, earlier: GpuReading, elapsed_s: float, t: HealthThresholds
) -> list[Reason]:
    now, before = gpu.ecc.volatile_corrected, earlier.ecc.volatile_corrected
    if now is None or before is None or now <= before:
        return []  # unsupported, unchanged, or counters reset by a driver reload
    increase = now - before
    per_hour = increase * 3600.0 / elapsed_s if elapsed_s > 0 else float("inf")
    if increase < t.correctable_ecc_min_increase or per_hour <= t.correctable_ecc_max_per_hour:
        return []
    return [
        _suspect(
            ReasonCode.ECC_CORRECTABLE_RISING,
            f"GPU {gpu.index}: {increase} corrected ECC errors in {elapsed_s:g} s "
            f"({per_hour:.0f}/h > {t.correctable_ecc_max_per_hour:g}/h)",
            gpu.index,
        )
    ]


def _nvlink_peer_reasons(readings: tuple[GpuReading, ...]) -> list[Reason]:
    """A GPU whose NVLink links are all down while its peers' are up."""
    with_links = [g for g in readings if g.lost is None and g.nvlink_up]
    if not any(any(g.nvlink_up or ()) for g in with_links):
        return []
    return [
        _suspect(
            ReasonCode.NVLINK_DOWN,
            f"GPU {g.index}: all {len(g.nvlink_up or ())} NVLink links down while peers are up",
            g.index,
        )
        for g in with_links
        if not any(g.nvlink_up or ())
    ]


def _host_reasons(host: HostReading, t: HealthThresholds) -> list[Reason]:
    reasons: list[Reason] = []
    free, total = host.disk_free_bytes, host.disk_total_bytes
    if free is not None and free < t.disk_full_bytes:
        reasons.append(
            _failed(
                ReasonCode.DISK_FULL,
                f"{free / GIB:.2f} GiB free on {host.checkpoint_path} "
                f"(< {t.disk_full_bytes / GIB:.2f} GiB)",
            )
        )
    elif free is not None and total and free / total < t.disk_low_fraction:
        reasons.append(
            _suspect(
                ReasonCode.DISK_LOW,
                f"{free / total:.1%} free on {host.checkpoint_path} (< {t.disk_low_fraction:.0%})",
            )
        )
    available, mem_total = host.mem_available_bytes, host.mem_total_bytes
    if available is not None and mem_total and available / mem_total < t.memory_low_fraction:
        reasons.append(
            _suspect(
                ReasonCode.MEMORY_LOW,
                f"{available / mem_total:.1%} of host memory available "
                f"(< {t.memory_low_fraction:.0%})",
            )
        )
    if host.probe_errors and t.suspect_on_probe_error:
        reasons.append(_suspect(ReasonCode.PROBE_ERROR, "host: " + "; ".join(host.probe_errors)))
    return reasons
