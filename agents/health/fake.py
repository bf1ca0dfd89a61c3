"""A fake GPU probe and a fake host probe with scriptable faults: a TEST AND DEMO DOUBLE.

Nothing here touches hardware. :class:`FakeGpuProbe` makes a CPU-only host look like one with
N GPUs (``firsthop-agent run --fake-gpus N``) and lets tests and demos inject the faults the
verdict must catch: heat, ECC errors, pending or failed row remaps, lost or missing GPUs, XID
events, throttling and NVLink links going down. It is deterministic: readings depend only on
the faults applied (no clock, no randomness), and UUIDs derive from a seed string and the index.
Idle figures come from a real H100 80GB HBM3 (``shared/data/gpu/README.md``: 34 C, 72 W).

Faults are applied by method calls, by :class:`Fault` values, or by a schedule that applies
faults before a given poll, which is how a demo says "GPU 1 falls off the bus at poll 5".
:func:`parse_fault` reads the textual form used on command lines (``"xid:1:79"``).

Must not import ``scheduler``, torch or pynvml.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self

from agents.health.errors import HealthProbeError
from agents.health.probe import (
    EccCounts,
    GpuReading,
    HostReading,
    RemappedRows,
    ThrottleReason,
)
from topology.errors import InvalidInputError

H100_NAME = "NVIDIA H100 80GB HBM3"
H100_MEMORY_BYTES = 81559 * 1024 * 1024
H100_POWER_LIMIT_W = 700.0
H100_NVLINK_LINKS = 18
IDLE_TEMPERATURE_C = 34
IDLE_POWER_W = 72.0
IDLE_MEMORY_USED_BYTES = 512 * 1024 * 1024


class FaultKind(StrEnum):
    """What a :class:`Fault` does (also its textual name in :func:`parse_fault`)."""

    TEMPERATURE = "temp"
    """``temp:GPU:CELSIUS``: set the temperature."""
    ECC = "ecc"
    """``ecc:GPU:CORRECTED[:UNCORRECTED]``: add ECC errors (volatile and aggregate)."""
    REMAP_PENDING = "remap-pending"
    """``remap-pending:GPU``: a row remap waits for a reset."""
    REMAP_FAILURE = "remap-failure"
    """``remap-failure:GPU``: a row remap failed."""
    LOST = "lost"
    """``lost:GPU``: the GPU is still listed but unreadable (fell off the bus)."""
    MISSING = "missing"
    """``missing:GPU``: the GPU is no longer listed at all."""
    XID = "xid"
    """``xid:GPU:CODE``: deliver an XID event on the next poll."""
    THROTTLE = "throttle"
    """``throttle:GPU:REASON[,REASON...]``: set the active throttle reasons (empty clears)."""
    NVLINK_DOWN = "nvlink-down"
    """``nvlink-down:GPU:LINK``: take an NVLink link down."""
    CLEAR = "clear"
    """``clear:GPU``: undo every fault of the GPU (a reset)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One scriptable fault.

    Attributes:
        kind: what to do.
        gpu: the GPU index it applies to.
        values: the kind's numeric arguments (see :class:`FaultKind`).
        reasons: throttle reasons for ``THROTTLE``.
    """

    kind: FaultKind
    gpu: int
    values: tuple[int, ...] = ()
    reasons: frozenset[ThrottleReason] = frozenset()


_ARITY: Mapping[FaultKind, tuple[int, int]] = {
    FaultKind.TEMPERATURE: (1, 1),
    FaultKind.ECC: (1, 2),
    FaultKind.REMAP_PENDING: (0, 0),
    FaultKind.REMAP_FAILURE: (0, 0),
    FaultKind.LOST: (0, 0),
    FaultKind.MISSING: (0, 0),
    FaultKind.XID: (1, 1),
    FaultKind.NVLINK_DOWN: (1, 1),
    FaultKind.CLEAR: (0, 0),
}


def parse_fault(text: str) -> Fault:
    """Parse ``KIND:GPU[:ARG...]`` (see :class:`FaultKind` for each kind's arguments).

    Raises:
        InvalidInputError: unknown kind, bad index or wrong arguments (reason
            ``invalid_fake_fault``).
    """
    parts = text.strip().split(":")
    try:
        kind = FaultKind(parts[0])
        gpu = int(parts[1])
        if gpu < 0:
            raise ValueError("negative GPU index")
        args = parts[2:]
        if kind is FaultKind.THROTTLE:
            if len(args) != 1:
                raise ValueError("throttle takes one comma-separated list of reasons")
            names = [name for name in args[0].split(",") if name]
            return Fault(kind, gpu, reasons=frozenset(ThrottleReason(n) for n in names))
        low, high = _ARITY[kind]
        if not low <= len(args) <= high:
            raise ValueError(f"{kind} takes {low}..{high} arguments")
        return Fault(kind, gpu, tuple(int(a) for a in args))
    except (ValueError, IndexError) as exc:
        raise InvalidInputError(
            f"bad fake fault {text!r}: {exc}", reason="invalid_fake_fault"
        ) from exc


@dataclass(slots=True)
class _FakeGpu:
    index: int
    uuid: str
    temperature_c: int = IDLE_TEMPERATURE_C
    power_w: float = IDLE_POWER_W
    ecc: EccCounts = field(default_factory=lambda: EccCounts(0, 0, 0, 0))
    rows: RemappedRows = field(default_factory=lambda: RemappedRows(0, 0, False, False))
    pending_xids: list[int] = field(default_factory=list)
    throttle: frozenset[ThrottleReason] = frozenset()
    links_down: set[int] = field(default_factory=set)
    lost: bool = False
    missing: bool = False


class FakeGpuProbe:
    """A deterministic fake :class:`~agents.health.probe.GpuProbe` (test and demo double).

    Args:
        count: GPUs to pretend to have.
        name: their name (an H100 by default, so deep-check reference figures resolve).
        seed: mixed into the UUIDs, so fake hosts get distinct GPUs.
        nvlink_links: NVLink links per GPU; 0 reads as "no NVLink" (``nvlink_up`` is None).
        schedule: faults to apply before poll number N (1-based: key 1 is the first poll).
    """

    def __init__(
        self,
        count: int,
        *,
        name: str = H100_NAME,
        seed: str = "fake",
        nvlink_links: int = H100_NVLINK_LINKS,
        schedule: Mapping[int, Iterable[Fault]] | None = None,
    ) -> None:
        """Create ``count`` healthy, idle GPUs."""
        if count < 0 or nvlink_links < 0:
            raise InvalidInputError(
                "fake GPU and NVLink counts must be >= 0", reason="invalid_fake_fault"
            )
        self._name = name
        self._links = nvlink_links
        self._gpus = [_FakeGpu(i, fake_uuid(seed, i)) for i in range(count)]
        self._schedule = {poll: tuple(faults) for poll, faults in (schedule or {}).items()}
        self._polls = 0
        self._closed = False

    def __enter__(self) -> Self:
        """Return the probe."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the probe."""
        self.close()

    @property
    def polls(self) -> int:
        """Polls served so far."""
        return self._polls

    def read(self) -> tuple[GpuReading, ...]:
        """Apply the faults scheduled for this poll, then read every listed GPU.

        Raises:
            HealthProbeError: the probe is closed.
        """
        if self._closed:
            raise HealthProbeError("the fake GPU probe is closed")
        self._polls += 1
        for fault in self._schedule.get(self._polls, ()):
            self.apply(fault)
        return tuple(self._reading(gpu) for gpu in self._gpus if not gpu.missing)

    def close(self) -> None:
        """Mark the probe closed. Idempotent."""
        self._closed = True

    # -- scripting ---------------------------------------------------------------------------

    def apply(self, fault: Fault) -> None:
        """Apply one fault now.

        Raises:
            InvalidInputError: the fault names a GPU this probe does not have.
        """
        gpu = self._gpu(fault.gpu)
        match fault.kind:
            case FaultKind.TEMPERATURE:
                gpu.temperature_c = fault.values[0]
            case FaultKind.ECC:
                corrected = fault.values[0]
                uncorrected = fault.values[1] if len(fault.values) > 1 else 0
                self.add_ecc_errors(gpu.index, corrected=corrected, uncorrected=uncorrected)
            case FaultKind.REMAP_PENDING:
                gpu.rows = dataclasses.replace(
                    gpu.rows, pending=True, uncorrectable=gpu.rows.uncorrectable + 1
                )
            case FaultKind.REMAP_FAILURE:
                gpu.rows = dataclasses.replace(gpu.rows, failure=True)
            case FaultKind.LOST:
                gpu.lost = True
            case FaultKind.MISSING:
                gpu.missing = True
            case FaultKind.XID:
                gpu.pending_xids.append(fault.values[0])
            case FaultKind.THROTTLE:
                gpu.throttle = fault.reasons
            case FaultKind.NVLINK_DOWN:
                gpu.links_down.add(fault.values[0])
            case FaultKind.CLEAR:
                self._gpus[gpu.index] = _FakeGpu(gpu.index, gpu.uuid)

    def set_temperature(self, gpu: int, celsius: int) -> None:
        """Set a GPU's temperature."""
        self.apply(Fault(FaultKind.TEMPERATURE, gpu, (celsius,)))

    def add_ecc_errors(self, gpu: int, *, corrected: int = 0, uncorrected: int = 0) -> None:
        """Add ECC errors to both the volatile and the aggregate counters."""
        state = self._gpu(gpu)
        ecc = state.ecc
        state.ecc = EccCounts(
            volatile_corrected=(ecc.volatile_corrected or 0) + corrected,
            volatile_uncorrected=(ecc.volatile_uncorrected or 0) + uncorrected,
            aggregate_corrected=(ecc.aggregate_corrected or 0) + corrected,
            aggregate_uncorrected=(ecc.aggregate_uncorrected or 0) + uncorrected,
        )

    def set_pending_remap(self, gpu: int) -> None:
        """Mark a row remap as pending a GPU reset."""
        self.apply(Fault(FaultKind.REMAP_PENDING, gpu))

    def set_remap_failure(self, gpu: int) -> None:
        """Mark a row remap as failed."""
        self.apply(Fault(FaultKind.REMAP_FAILURE, gpu))

    def lose_gpu(self, gpu: int) -> None:
        """Keep listing the GPU but make it unreadable (fell off the bus)."""
        self.apply(Fault(FaultKind.LOST, gpu))

    def drop_gpu(self, gpu: int) -> None:
        """Stop listing the GPU at all (fewer GPUs than expected)."""
        self.apply(Fault(FaultKind.MISSING, gpu))

    def inject_xid(self, gpu: int, xid: int) -> None:
        """Deliver an XID event on the next poll (once, like an NVML event)."""
        self.apply(Fault(FaultKind.XID, gpu, (xid,)))

    def set_throttle(self, gpu: int, reasons: Iterable[ThrottleReason]) -> None:
        """Set the active throttle reasons (an empty iterable clears them)."""
        self.apply(Fault(FaultKind.THROTTLE, gpu, reasons=frozenset(reasons)))

    def set_nvlink_down(self, gpu: int, link: int) -> None:
        """Take one NVLink link of a GPU down."""
        self.apply(Fault(FaultKind.NVLINK_DOWN, gpu, (link,)))

    def clear(self, gpu: int) -> None:
        """Undo every fault of a GPU, as a GPU reset would (keeps its UUID)."""
        self.apply(Fault(FaultKind.CLEAR, gpu))

    # -- reading -----------------------------------------------------------------------------

    def _gpu(self, index: int) -> _FakeGpu:
        if not 0 <= index < len(self._gpus):
            raise InvalidInputError(
                f"fake GPU {index} does not exist (have {len(self._gpus)})",
                reason="invalid_fake_fault",
            )
        return self._gpus[index]

    def _reading(self, gpu: _FakeGpu) -> GpuReading:
        xids = tuple(gpu.pending_xids)
        gpu.pending_xids.clear()
        if gpu.lost:
            return GpuReading(
                gpu.index, self._name, gpu.uuid, lost="fake: GPU is lost", xid_events=xids
            )
        links = (
            tuple(link not in gpu.links_down for link in range(self._links))
            if self._links
            else None
        )
        return GpuReading(
            index=gpu.index,
            name=self._name,
            uuid=gpu.uuid,
            temperature_c=gpu.temperature_c,
            power_w=gpu.power_w,
            power_limit_w=H100_POWER_LIMIT_W,
            ecc=gpu.ecc,
            remapped_rows=gpu.rows,
            xid_events=xids,
            throttle_reasons=gpu.throttle,
            nvlink_up=links,
            memory_total_bytes=H100_MEMORY_BYTES,
            memory_used_bytes=IDLE_MEMORY_USED_BYTES,
        )


def fake_uuid(seed: str, index: int) -> str:
    """A stable ``GPU-...`` UUID for fake GPU ``index`` of the host seeded ``seed``."""
    digest = hashlib.sha256(f"{seed}/{index}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class FakeHostProbe:
    """A fake :class:`~agents.health.probe.HostProbe` (test and demo double).

    Starts as a roomy host (1 TiB disk half free, 512 GiB memory mostly available, idle); set
    :attr:`reading` to script faults, e.g. ``dataclasses.replace(probe.reading,
    disk_free_bytes=0)``.
    """

    def __init__(self, checkpoint_path: str = "/checkpoints") -> None:
        """Create an idle, roomy host."""
        tib, gib = 1024**4, 1024**3
        self.reading = HostReading(
            checkpoint_path=checkpoint_path,
            disk_total_bytes=tib,
            disk_free_bytes=tib // 2,
            mem_total_bytes=512 * gib,
            mem_available_bytes=480 * gib,
            load_1m=0.5,
            load_5m=0.5,
            load_15m=0.5,
            cpu_count=64,
        )

    def read(self) -> HostReading:
        """Return the scripted reading."""
        return self.reading
