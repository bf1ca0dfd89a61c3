"""The NVML GPU probe: reads every GPU of the host through nvidia-ml-py (``pynvml``).

Every query is guarded: a field a GPU does not support (row remapping before Ampere, NVLink on
PCIe cards, ECC counters with ECC off, an entry point an older driver lacks) reads as ``None``;
a GPU that fell off the bus or needs a reset reads as ``lost``; any other NVML error is kept in
the reading's ``probe_errors`` and the field reads as ``None``. Critical XID events arrive
through one NVML event set per GPU (``nvmlEventSetCreate``, ``nvmlDeviceRegisterEvents`` with
``nvmlEventTypeXidCriticalError``) drained with ``nvmlEventSetWait`` and a zero timeout on every
poll, so a poll never blocks.

The NVML module is injected (:meth:`NvmlGpuProbe.open` takes any object shaped like
:class:`NvmlApi`), so tests drive the guarding logic with a fake module and no GPU. Numeric NVML
constants are the C ABI values, written out below and checked against ``pynvml`` by a test.

Must not import ``scheduler`` or torch. Imports ``pynvml`` only in :func:`load_nvml`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import ParamSpec, Protocol, Self, TypeVar, cast

from agents.health.errors import HealthProbeError, NvmlUnavailableError
from agents.health.probe import EccCounts, GpuReading, RemappedRows, ThrottleReason

# nvmlReturn_t values (pynvml.NVML_ERROR_*).
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_GPU_NOT_FOUND = 28

# Query arguments (pynvml.NVML_TEMPERATURE_GPU, NVML_MEMORY_ERROR_TYPE_*, NVML_*_ECC).
NVML_TEMPERATURE_GPU = 0
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
#: pynvml.NVML_NVLINK_MAX_LINKS: links probed once at open (H100 has 18, GB200 more).
NVML_NVLINK_MAX_LINKS = 36
#: pynvml.nvmlEventTypeXidCriticalError.
NVML_EVENT_TYPE_XID_CRITICAL_ERROR = 0x8

#: pynvml.nvmlClocksEventReason* bits (same values as the older nvmlClocksThrottleReason*).
THROTTLE_REASON_BITS: dict[int, ThrottleReason] = {
    0x1: ThrottleReason.GPU_IDLE,
    0x2: ThrottleReason.APPLICATIONS_CLOCKS_SETTING,
    0x4: ThrottleReason.SW_POWER_CAP,
    0x8: ThrottleReason.HW_SLOWDOWN,
    0x10: ThrottleReason.SYNC_BOOST,
    0x20: ThrottleReason.SW_THERMAL_SLOWDOWN,
    0x40: ThrottleReason.HW_THERMAL_SLOWDOWN,
    0x80: ThrottleReason.HW_POWER_BRAKE_SLOWDOWN,
    0x100: ThrottleReason.DISPLAY_CLOCK_SETTING,
}

#: The field reads as None: the GPU, driver or configuration does not offer it.
_UNSUPPORTED = frozenset(
    {
        NVML_ERROR_NOT_SUPPORTED,
        NVML_ERROR_FUNCTION_NOT_FOUND,
        NVML_ERROR_NO_PERMISSION,
        NVML_ERROR_NOT_FOUND,
    }
)
#: The GPU is gone or unusable until reset: its reading is ``lost``.
_LOST = frozenset({NVML_ERROR_GPU_IS_LOST, NVML_ERROR_RESET_REQUIRED, NVML_ERROR_GPU_NOT_FOUND})
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Events drained per GPU and poll at most (a storm must not stall the heartbeat).
MAX_EVENTS_PER_POLL = 256


class NvmlEventData(Protocol):
    """What ``nvmlEventSetWait`` returns (``c_nvmlEventData_t``)."""

    eventType: int  # noqa: N815 - NVML's field name
    eventData: int  # noqa: N815 - NVML's field name


class NvmlMemory(Protocol):
    """What ``nvmlDeviceGetMemoryInfo`` returns (``c_nvmlMemory_t``)."""

    total: int
    used: int


class NvmlApi(Protocol):
    """The part of the ``pynvml`` module this probe uses (names exactly as pynvml spells them).

    ``NVMLError`` instances carry the ``nvmlReturn_t`` code in ``value``.
    """

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...  # noqa: N802
    def nvmlShutdown(self) -> None: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> object: ...  # noqa: N802
    def nvmlDeviceGetName(self, handle: object) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetUUID(self, handle: object) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetPowerUsage(self, handle: object) -> int: ...  # noqa: N802
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> int: ...  # noqa: N802
    def nvmlDeviceGetTotalEccErrors(  # noqa: N802
        self, handle: object, error_type: int, counter_type: int
    ) -> int: ...
    def nvmlDeviceGetRemappedRows(  # noqa: N802
        self, handle: object
    ) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: object) -> int: ...  # noqa: N802
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: object) -> int: ...  # noqa: N802
    def nvmlDeviceGetNvLinkState(self, handle: object, link: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: object) -> NvmlMemory: ...  # noqa: N802
    def nvmlDeviceGetSupportedEventTypes(self, handle: object) -> int: ...  # noqa: N802
    def nvmlEventSetCreate(self) -> object: ...  # noqa: N802
    def nvmlDeviceRegisterEvents(  # noqa: N802
        self, handle: object, event_types: int, event_set: object
    ) -> None: ...
    def nvmlEventSetWait(self, event_set: object, timeout_ms: int) -> NvmlEventData: ...  # noqa: N802
    def nvmlEventSetFree(self, event_set: object) -> None: ...  # noqa: N802


def load_nvml(module_name: str = "pynvml") -> NvmlApi:
    """Import nvidia-ml-py's ``pynvml`` module.

    Args:
        module_name: the module to import (only tests change it).

    Raises:
        NvmlUnavailableError: the package is not installed (reason ``nvml_unavailable``).
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NvmlUnavailableError(
            "nvidia-ml-py is not installed; install firsthop[agent] on GPU hosts"
        ) from exc
    return cast(NvmlApi, module)


def error_code(exc: BaseException) -> int | None:
    """The ``nvmlReturn_t`` code carried by an ``NVMLError`` (``None`` if it has none)."""
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


class _GpuLostError(Exception):
    """Internal: a query found the GPU gone; the reading becomes ``lost``."""


@dataclass(slots=True)
class _Device:
    index: int
    handle: object | None
    name: str
    uuid: str
    lost_at_open: str | None = None
    event_set: object | None = None
    nvlink_links: tuple[int, ...] | None = None


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlGpuProbe:
    """A :class:`~agents.health.probe.GpuProbe` backed by NVML.

    Open with :meth:`open` (initialises NVML, enumerates GPUs, registers XID events); use as a
    context manager or call :meth:`close`. Not thread-safe: poll from one thread.
    """

    def __init__(self, nvml: NvmlApi, devices: tuple[_Device, ...]) -> None:
        """Wrap an initialised NVML module and its devices; use :meth:`open` instead."""
        self._nvml = nvml
        self._devices = devices
        self._closed = False

    @classmethod
    def open(cls, nvml: NvmlApi | None = None) -> NvmlGpuProbe:
        """Initialise NVML and prepare every GPU for polling.

        Args:
            nvml: the NVML module; ``None`` imports ``pynvml``. Tests pass a fake.

        Returns:
            An open probe. GPUs that cannot be opened are kept and read as ``lost``.

        Raises:
            NvmlUnavailableError: no NVML library or driver, or ``nvmlInit`` failed.
            HealthProbeError: NVML initialised but the GPU count could not be read.
        """
        api = nvml if nvml is not None else load_nvml()
        try:
            api.nvmlInit()
        except (api.NVMLError, OSError) as exc:
            raise NvmlUnavailableError(f"NVML is unavailable on this host: {exc}") from exc
        try:
            count = api.nvmlDeviceGetCount()
        except api.NVMLError as exc:
            _shutdown_quietly(api)
            raise HealthProbeError(f"NVML could not count GPUs: {exc}") from exc
        probe = cls(api, ())
        probe._devices = tuple(probe._open_device(index) for index in range(count))
        return probe

    def __enter__(self) -> Self:
        """Return the open probe."""
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
    def gpu_count(self) -> int:
        """GPUs found when the probe was opened."""
        return len(self._devices)

    def read(self) -> tuple[GpuReading, ...]:
        """Poll every GPU once (see :meth:`agents.health.probe.GpuProbe.read`).

        Raises:
            HealthProbeError: the probe is closed.
        """
        if self._closed:
            raise HealthProbeError("the NVML probe is closed")
        return tuple(self._read_device(device) for device in self._devices)

    def close(self) -> None:
        """Free the event sets and shut NVML down. Idempotent; never raises NVML errors."""
        if self._closed:
            return
        self._closed = True
        for device in self._devices:
            if device.event_set is not None:
                with contextlib.suppress(self._nvml.NVMLError):
                    self._nvml.nvmlEventSetFree(device.event_set)
                device.event_set = None
        _shutdown_quietly(self._nvml)

    # -- opening -----------------------------------------------------------------------------

    def _open_device(self, index: int) -> _Device:
        api = self._nvml
        try:
            handle = api.nvmlDeviceGetHandleByIndex(index)
            name = _text(api.nvmlDeviceGetName(handle))
            uuid = _text(api.nvmlDeviceGetUUID(handle))
        except api.NVMLError as exc:
            return _Device(index, None, "unknown", "", lost_at_open=f"open: {exc}")
        device = _Device(index, handle, name, uuid)
        device.event_set = self._register_xid_events(handle)
        device.nvlink_links = self._nvlink_links(handle)
        return device

    def _register_xid_events(self, handle: object) -> object | None:
        api = self._nvml
        try:
            supported = api.nvmlDeviceGetSupportedEventTypes(handle)
        except api.NVMLError:
            return None
        if not supported & NVML_EVENT_TYPE_XID_CRITICAL_ERROR:
            return None
        try:
            event_set = api.nvmlEventSetCreate()
        except api.NVMLError:
            return None
        try:
            api.nvmlDeviceRegisterEvents(handle, NVML_EVENT_TYPE_XID_CRITICAL_ERROR, event_set)
        except api.NVMLError:
            with contextlib.suppress(api.NVMLError):
                api.nvmlEventSetFree(event_set)
            return None
        return event_set

    def _nvlink_links(self, handle: object) -> tuple[int, ...] | None:
        """Links that answer a state query at open; ``None`` when none does (no NVLink)."""
        api = self._nvml
        links: list[int] = []
        for link in range(NVML_NVLINK_MAX_LINKS):
            try:
                api.nvmlDeviceGetNvLinkState(handle, link)
            except api.NVMLError:
                continue
            links.append(link)
        return tuple(links) or None

    # -- polling -----------------------------------------------------------------------------

    def _query(
        self,
        errors: list[str],
        field: str,
        fn: Callable[_P, _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T | None:
        try:
            return fn(*args, **kwargs)
        except self._nvml.NVMLError as exc:
            self._classify(errors, field, exc)
            return None

    @staticmethod
    def _classify(errors: list[str], field: str, exc: Exception) -> None:
        """Sort a failed query: unsupported (ignored), GPU lost (raises) or a probe error."""
        code = error_code(exc)
        if code in _UNSUPPORTED:
            return
        if code in _LOST:
            raise _GpuLostError(f"{field}: {exc}") from exc
        errors.append(f"{field}: {exc}")

    def _read_device(self, device: _Device) -> GpuReading:
        if device.handle is None:
            return GpuReading(device.index, device.name, device.uuid, lost=device.lost_at_open)
        errors: list[str] = []
        xids: tuple[int, ...] | None = None
        try:
            xids = self._drain_xids(device, errors)
            return self._read_fields(device, device.handle, xids, errors)
        except _GpuLostError as lost:
            return GpuReading(
                device.index, device.name, device.uuid, lost=str(lost), xid_events=xids
            )

    def _read_fields(
        self, device: _Device, handle: object, xids: tuple[int, ...] | None, errors: list[str]
    ) -> GpuReading:
        api = self._nvml
        q = self._query
        temperature = q(
            errors, "temperature", api.nvmlDeviceGetTemperature, handle, NVML_TEMPERATURE_GPU
        )
        power_mw = q(errors, "power", api.nvmlDeviceGetPowerUsage, handle)
        limit_mw = q(errors, "power_limit", api.nvmlDeviceGetEnforcedPowerLimit, handle)
        memory = q(errors, "memory", api.nvmlDeviceGetMemoryInfo, handle)
        return GpuReading(
            index=device.index,
            name=device.name,
            uuid=device.uuid,
            temperature_c=None if temperature is None else int(temperature),
            power_w=None if power_mw is None else power_mw / 1000.0,
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
            ecc=self._ecc(handle, errors),
            remapped_rows=self._remapped_rows(handle, errors),
            xid_events=xids,
            throttle_reasons=self._throttle_reasons(handle, errors),
            nvlink_up=self._nvlink_state(device, handle, errors),
            memory_total_bytes=None if memory is None else int(memory.total),
            memory_used_bytes=None if memory is None else int(memory.used),
            probe_errors=tuple(errors),
        )

    def _drain_xids(self, device: _Device, errors: list[str]) -> tuple[int, ...] | None:
        if device.event_set is None:
            return None
        api = self._nvml
        codes: list[int] = []
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                event = api.nvmlEventSetWait(device.event_set, 0)
            except api.NVMLError as exc:
                code = error_code(exc)
                if code == NVML_ERROR_TIMEOUT:
                    break
                if code in _LOST:
                    raise _GpuLostError(f"xid_events: {exc}") from exc
                errors.append(f"xid_events: {exc}")
                break
            if event.eventType & NVML_EVENT_TYPE_XID_CRITICAL_ERROR:
                codes.append(int(event.eventData))
        return tuple(codes)

    def _ecc(self, handle: object, errors: list[str]) -> EccCounts:
        fn = self._nvml.nvmlDeviceGetTotalEccErrors

        def count(field: str, error_type: int, counter: int) -> int | None:
            value = self._query(errors, field, fn, handle, error_type, counter)
            return None if value is None else int(value)

        return EccCounts(
            volatile_corrected=count(
                "ecc_volatile_corrected", NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC
            ),
            volatile_uncorrected=count(
                "ecc_volatile_uncorrected", NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC
            ),
            aggregate_corrected=count(
                "ecc_aggregate_corrected", NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_AGGREGATE_ECC
            ),
            aggregate_uncorrected=count(
                "ecc_aggregate_uncorrected",
                NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                NVML_AGGREGATE_ECC,
            ),
        )

    def _remapped_rows(self, handle: object, errors: list[str]) -> RemappedRows | None:
        rows = self._query(errors, "remapped_rows", self._nvml.nvmlDeviceGetRemappedRows, handle)
        if rows is None:
            return None
        correctable, uncorrectable, pending, failure = rows
        return RemappedRows(int(correctable), int(uncorrectable), bool(pending), bool(failure))

    def _throttle_reasons(
        self, handle: object, errors: list[str]
    ) -> frozenset[ThrottleReason] | None:
        api = self._nvml
        # Drivers before R535 lack the "clocks event" entry point; the deprecated "throttle"
        # one returns the same bits.
        mask: int | None
        try:
            mask = api.nvmlDeviceGetCurrentClocksEventReasons(handle)
        except api.NVMLError as exc:
            if error_code(exc) == NVML_ERROR_FUNCTION_NOT_FOUND:
                mask = self._query(
                    errors,
                    "throttle_reasons",
                    api.nvmlDeviceGetCurrentClocksThrottleReasons,
                    handle,
                )
            else:
                self._classify(errors, "throttle_reasons", exc)
                mask = None
        if mask is None:
            return None
        return frozenset(reason for bit, reason in THROTTLE_REASON_BITS.items() if mask & bit)

    def _nvlink_state(
        self, device: _Device, handle: object, errors: list[str]
    ) -> tuple[bool, ...] | None:
        if device.nvlink_links is None:
            return None
        states: list[bool] = []
        for link in device.nvlink_links:
            state = self._query(
                errors, f"nvlink[{link}]", self._nvml.nvmlDeviceGetNvLinkState, handle, link
            )
            if state is not None:
                states.append(bool(state))
        return tuple(states) or None


def _shutdown_quietly(api: NvmlApi) -> None:
    with contextlib.suppress(api.NVMLError):
        api.nvmlShutdown()
