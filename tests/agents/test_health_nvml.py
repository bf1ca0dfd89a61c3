"""The NVML probe against an injected fake ``pynvml`` module (no GPU needed), its ABI constants
against the real ``pynvml``, and (marked ``gpu``) the real thing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from health_builders import host

from agents.health import nvml as nv
from agents.health.errors import HealthProbeError, NvmlUnavailableError
from agents.health.nvml import NvmlGpuProbe, load_nvml
from agents.health.probe import EccCounts, GpuProbe, RemappedRows, ThrottleReason
from agents.health.verdict import Health, HealthThresholds, verdict

NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_UNKNOWN = 999
XID = nv.NVML_EVENT_TYPE_XID_CRITICAL_ERROR
DOUBLE_BIT_ECC_EVENT = 0x2


class FakeNVMLError(Exception):
    """Like ``pynvml.NVMLError``: the ``nvmlReturn_t`` code is in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeEvent:
    eventType: int  # noqa: N815 - NVML's field name
    eventData: int  # noqa: N815 - NVML's field name


@dataclass
class FakeMemory:
    total: int
    used: int


@dataclass
class FakeDevice:
    """One GPU of the fake module. ``fail`` maps a pynvml function name to an error code."""

    name: str | bytes = "NVIDIA H100 80GB HBM3"
    uuid: str | bytes = "GPU-00000000-0000-0000-0000-000000000000"
    temperature: int = 41
    power_mw: int = 72_500
    limit_mw: int = 700_000
    ecc: dict[tuple[int, int], int] = field(default_factory=dict)
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    throttle_mask: int = 0
    nvlink: list[int] = field(default_factory=lambda: [1] * 18)
    events: list[FakeEvent] = field(default_factory=list)
    supported_events: int = XID | DOUBLE_BIT_ECC_EVENT
    fail: dict[str, int] = field(default_factory=dict)


class FakeNvml:
    """A fake ``pynvml`` module: the functions :class:`NvmlApi` names, over fake devices."""

    NVMLError = FakeNVMLError

    def __init__(self, devices: list[FakeDevice], *, init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.shutdowns = 0
        self.event_sets: dict[int, FakeDevice | None] = {}
        self.freed: list[int] = []

    def _check(self, fn: str, device: FakeDevice | None = None) -> None:
        if device is not None and fn in device.fail:
            raise FakeNVMLError(device.fail[fn])

    def nvmlInit(self) -> None:  # noqa: N802
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:  # noqa: N802
        device = self.devices[index]
        self._check("nvmlDeviceGetHandleByIndex", device)
        return device

    def nvmlDeviceGetName(self, h: FakeDevice) -> str | bytes:  # noqa: N802
        self._check("nvmlDeviceGetName", h)
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeDevice) -> str | bytes:  # noqa: N802
        self._check("nvmlDeviceGetUUID", h)
        return h.uuid

    def nvmlDeviceGetTemperature(self, h: FakeDevice, sensor: int) -> int:  # noqa: N802
        assert sensor == 0
        self._check("nvmlDeviceGetTemperature", h)
        return h.temperature

    def nvmlDeviceGetPowerUsage(self, h: FakeDevice) -> int:  # noqa: N802
        self._check("nvmlDeviceGetPowerUsage", h)
        return h.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeDevice) -> int:  # noqa: N802
        self._check("nvmlDeviceGetEnforcedPowerLimit", h)
        return h.limit_mw

    def nvmlDeviceGetTotalEccErrors(self, h: FakeDevice, kind: int, counter: int) -> int:  # noqa: N802
        self._check("nvmlDeviceGetTotalEccErrors", h)
        return h.ecc.get((kind, counter), 0)

    def nvmlDeviceGetRemappedRows(self, h: FakeDevice) -> tuple[int, int, int, int]:  # noqa: N802
        self._check("nvmlDeviceGetRemappedRows", h)
        return h.remapped

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeDevice) -> int:  # noqa: N802
        self._check("nvmlDeviceGetCurrentClocksEventReasons", h)
        return h.throttle_mask

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeDevice) -> int:  # noqa: N802
        self._check("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        return h.throttle_mask

    def nvmlDeviceGetNvLinkState(self, h: FakeDevice, link: int) -> int:  # noqa: N802
        self._check("nvmlDeviceGetNvLinkState", h)
        if link >= len(h.nvlink):
            raise FakeNVMLError(nv.NVML_ERROR_INVALID_ARGUMENT)
        return h.nvlink[link]

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice) -> FakeMemory:  # noqa: N802
        self._check("nvmlDeviceGetMemoryInfo", h)
        return FakeMemory(total=80 * 2**30, used=2**29)

    def nvmlDeviceGetSupportedEventTypes(self, h: FakeDevice) -> int:  # noqa: N802
        self._check("nvmlDeviceGetSupportedEventTypes", h)
        return h.supported_events

    def nvmlEventSetCreate(self) -> int:  # noqa: N802
        handle = len(self.event_sets) + 100
        self.event_sets[handle] = None
        return handle

    def nvmlDeviceRegisterEvents(self, h: FakeDevice, types: int, event_set: int) -> None:  # noqa: N802
        assert types == XID
        self._check("nvmlDeviceRegisterEvents", h)
        self.event_sets[event_set] = h

    def nvmlEventSetWait(self, event_set: int, timeout_ms: int) -> FakeEvent:  # noqa: N802
        assert timeout_ms == 0, "a poll must never block"
        device = self.event_sets[event_set]
        assert device is not None
        self._check("nvmlEventSetWait", device)
        if not device.events:
            raise FakeNVMLError(nv.NVML_ERROR_TIMEOUT)
        return device.events.pop(0)

    def nvmlEventSetFree(self, event_set: int) -> None:  # noqa: N802
        self.freed.append(event_set)


def open_probe(*devices: FakeDevice) -> tuple[NvmlGpuProbe, FakeNvml]:
    fake = FakeNvml(list(devices))
    return NvmlGpuProbe.open(fake), fake  # type: ignore[arg-type]


def test_reads_and_converts_every_field() -> None:
    device = FakeDevice(
        name=b"NVIDIA H100 80GB HBM3",
        ecc={(0, 0): 3, (1, 0): 0, (0, 1): 7, (1, 1): 1},
        remapped=(2, 1, 0, 0),
        throttle_mask=0x4 | 0x1,
    )
    probe, _ = open_probe(device)

    (reading,) = probe.read()

    assert isinstance(probe, GpuProbe)
    assert reading.name == "NVIDIA H100 80GB HBM3"
    assert reading.uuid == device.uuid
    assert (reading.temperature_c, reading.power_w, reading.power_limit_w) == (41, 72.5, 700.0)
    assert reading.ecc == EccCounts(3, 0, 7, 1)
    assert reading.remapped_rows == RemappedRows(2, 1, pending=False, failure=False)
    assert reading.throttle_reasons == frozenset(
        {ThrottleReason.SW_POWER_CAP, ThrottleReason.GPU_IDLE}
    )
    assert reading.nvlink_up == (True,) * 18
    assert reading.memory_total_bytes == 80 * 2**30
    assert reading.xid_events == ()
    assert (reading.lost, reading.probe_errors) == (None, ())


def test_unsupported_fields_read_as_none_without_errors() -> None:
    not_supported = nv.NVML_ERROR_NOT_SUPPORTED
    pcie_pre_ampere = FakeDevice(
        fail={
            "nvmlDeviceGetRemappedRows": not_supported,
            "nvmlDeviceGetNvLinkState": not_supported,
            "nvmlDeviceGetTotalEccErrors": not_supported,
            "nvmlDeviceGetEnforcedPowerLimit": nv.NVML_ERROR_NO_PERMISSION,
            "nvmlDeviceGetSupportedEventTypes": not_supported,
        }
    )
    probe, _ = open_probe(pcie_pre_ampere)

    (reading,) = probe.read()

    assert reading.remapped_rows is None
    assert reading.nvlink_up is None
    assert reading.ecc == EccCounts()
    assert reading.power_limit_w is None
    assert reading.xid_events is None
    assert reading.probe_errors == ()
    assert verdict((reading,), host(), None, HealthThresholds()).health is Health.HEALTHY


def test_old_driver_falls_back_to_throttle_reasons() -> None:
    old = FakeDevice(
        throttle_mask=0x40,
        fail={"nvmlDeviceGetCurrentClocksEventReasons": nv.NVML_ERROR_FUNCTION_NOT_FOUND},
    )
    probe, _ = open_probe(old)

    (reading,) = probe.read()

    assert reading.throttle_reasons == frozenset({ThrottleReason.HW_THERMAL_SLOWDOWN})


def test_unexpected_error_is_kept_as_probe_error() -> None:
    probe, _ = open_probe(FakeDevice(fail={"nvmlDeviceGetPowerUsage": NVML_ERROR_UNKNOWN}))

    (reading,) = probe.read()
    result = verdict((reading,), host(), None, HealthThresholds())

    assert reading.power_w is None
    assert reading.probe_errors == (f"power: NVML error {NVML_ERROR_UNKNOWN}",)
    assert result.codes == ("probe_error",)


def test_gpu_lost_mid_poll_keeps_the_xid_that_announced_it() -> None:
    device = FakeDevice(events=[FakeEvent(XID, 79)])
    probe, _ = open_probe(device, FakeDevice(uuid="GPU-other"))
    device.fail["nvmlDeviceGetTemperature"] = nv.NVML_ERROR_GPU_IS_LOST

    lost, other = probe.read()
    result = verdict((lost, other), host(), None, HealthThresholds())

    assert lost.lost == "temperature: NVML error 15"
    assert lost.xid_events == (79,)
    assert lost.temperature_c is None
    assert other.lost is None
    assert (result.health, result.codes) == (Health.FAILED, ("gpu_lost", "xid_critical"))


def test_gpu_unreachable_at_open_reads_as_lost() -> None:
    probe, _ = open_probe(
        FakeDevice(), FakeDevice(fail={"nvmlDeviceGetHandleByIndex": nv.NVML_ERROR_GPU_IS_LOST})
    )

    readings = probe.read()

    assert probe.gpu_count == 2
    assert readings[1].lost is not None
    assert readings[1].lost.startswith("open:")


def test_xid_events_are_drained_each_poll_and_other_event_types_ignored() -> None:
    device = FakeDevice(
        events=[FakeEvent(XID, 48), FakeEvent(DOUBLE_BIT_ECC_EVENT, 0), FakeEvent(XID, 63)]
    )
    probe, _ = open_probe(device)

    first = probe.read()[0].xid_events
    device.events.append(FakeEvent(XID, 94))
    second = probe.read()[0].xid_events
    third = probe.read()[0].xid_events

    assert (first, second, third) == ((48, 63), (94,), ())


def test_event_storm_is_bounded_per_poll() -> None:
    device = FakeDevice(events=[FakeEvent(XID, 13)] * (nv.MAX_EVENTS_PER_POLL + 5))
    probe, _ = open_probe(device)

    first, second = probe.read()[0].xid_events, probe.read()[0].xid_events

    assert first is not None
    assert second is not None
    assert (len(first), len(second)) == (nv.MAX_EVENTS_PER_POLL, 5)


def test_gpu_without_xid_event_support_reports_none() -> None:
    probe, fake = open_probe(FakeDevice(supported_events=DOUBLE_BIT_ECC_EVENT))

    assert probe.read()[0].xid_events is None
    assert fake.event_sets == {}


def test_failed_event_registration_frees_the_set() -> None:
    device = FakeDevice(fail={"nvmlDeviceRegisterEvents": nv.NVML_ERROR_NOT_SUPPORTED})
    probe, fake = open_probe(device)

    assert probe.read()[0].xid_events is None
    assert fake.freed == list(fake.event_sets)


def test_nvlink_links_present_at_open_are_tracked() -> None:
    device = FakeDevice(nvlink=[1] * 12)
    probe, _ = open_probe(device, FakeDevice(uuid="GPU-b", nvlink=[1] * 12))
    device.nvlink[7] = 0

    readings = probe.read()
    result = verdict(readings, host(), None, HealthThresholds())

    assert readings[0].nvlink_up == (True,) * 7 + (False,) + (True,) * 4
    assert result.codes == ("nvlink_down",)


@pytest.mark.parametrize("code", [NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED])
def test_init_failure_is_nvml_unavailable(code: int) -> None:
    fake = FakeNvml([], init_error=code)

    with pytest.raises(NvmlUnavailableError) as caught:
        NvmlGpuProbe.open(fake)  # type: ignore[arg-type]

    assert caught.value.reason == "nvml_unavailable"
    assert caught.value.status_code == "UNAVAILABLE"


def test_missing_nvml_package_is_nvml_unavailable() -> None:
    with pytest.raises(NvmlUnavailableError, match="nvidia-ml-py is not installed") as caught:
        load_nvml("firsthop_no_such_nvml_module")

    assert caught.value.reason == "nvml_unavailable"


def test_close_frees_event_sets_and_shuts_down_once() -> None:
    probe, fake = open_probe(FakeDevice(), FakeDevice(uuid="GPU-b"))

    with probe:
        probe.read()
    probe.close()

    assert sorted(fake.freed) == sorted(fake.event_sets)
    assert len(fake.freed) == 2
    assert fake.shutdowns == 1
    with pytest.raises(HealthProbeError, match="closed"):
        probe.read()


def test_abi_constants_match_pynvml() -> None:
    pynvml = importlib.import_module("pynvml")
    names = {
        "NVML_ERROR_INVALID_ARGUMENT": nv.NVML_ERROR_INVALID_ARGUMENT,
        "NVML_ERROR_NOT_SUPPORTED": nv.NVML_ERROR_NOT_SUPPORTED,
        "NVML_ERROR_NO_PERMISSION": nv.NVML_ERROR_NO_PERMISSION,
        "NVML_ERROR_NOT_FOUND": nv.NVML_ERROR_NOT_FOUND,
        "NVML_ERROR_TIMEOUT": nv.NVML_ERROR_TIMEOUT,
        "NVML_ERROR_FUNCTION_NOT_FOUND": nv.NVML_ERROR_FUNCTION_NOT_FOUND,
        "NVML_ERROR_GPU_IS_LOST": nv.NVML_ERROR_GPU_IS_LOST,
        "NVML_ERROR_RESET_REQUIRED": nv.NVML_ERROR_RESET_REQUIRED,
        "NVML_ERROR_GPU_NOT_FOUND": nv.NVML_ERROR_GPU_NOT_FOUND,
        "NVML_TEMPERATURE_GPU": nv.NVML_TEMPERATURE_GPU,
        "NVML_MEMORY_ERROR_TYPE_CORRECTED": nv.NVML_MEMORY_ERROR_TYPE_CORRECTED,
        "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        "NVML_VOLATILE_ECC": nv.NVML_VOLATILE_ECC,
        "NVML_AGGREGATE_ECC": nv.NVML_AGGREGATE_ECC,
        "NVML_NVLINK_MAX_LINKS": nv.NVML_NVLINK_MAX_LINKS,
        "nvmlEventTypeXidCriticalError": nv.NVML_EVENT_TYPE_XID_CRITICAL_ERROR,
        "nvmlClocksEventReasonGpuIdle": 0x1,
        "nvmlClocksEventReasonApplicationsClocksSetting": 0x2,
        "nvmlClocksEventReasonSwPowerCap": 0x4,
        "nvmlClocksEventReasonHwSlowdown": 0x8,
        "nvmlClocksEventReasonSyncBoost": 0x10,
        "nvmlClocksEventReasonSwThermalSlowdown": 0x20,
        "nvmlClocksEventReasonHwThermalSlowdown": 0x40,
        "nvmlClocksEventReasonHwPowerBrakeSlowdown": 0x80,
        "nvmlClocksEventReasonDisplayClockSetting": 0x100,
    }

    assert {name: getattr(pynvml, name) for name in names} == names
    assert set(nv.THROTTLE_REASON_BITS) == {v for k, v in names.items() if "Reason" in k}


def test_every_function_the_probe_uses_exists_in_pynvml() -> None:
    pynvml = importlib.import_module("pynvml")
    used = [name for name in vars(nv.NvmlApi) if name.startswith("nvml")]

    assert len(used) == 20
    assert [name for name in used if not callable(getattr(pynvml, name, None))] == []
    assert issubclass(pynvml.NVMLError, Exception)


def nvml_works() -> bool:
    """Whether the real NVML opens on this host."""
    try:
        NvmlGpuProbe.open().close()
    except NvmlUnavailableError:
        return False
    return True


def test_real_pynvml_without_a_driver_is_nvml_unavailable() -> None:
    if nvml_works():
        pytest.skip("this host has a working NVML; the real probe is tested by `-m gpu`")

    with pytest.raises(NvmlUnavailableError) as caught:
        NvmlGpuProbe.open()

    assert caught.value.reason == "nvml_unavailable"


@pytest.mark.gpu
def test_real_nvml_probe_reads_every_gpu() -> None:
    with NvmlGpuProbe.open() as probe:
        first = probe.read()
        second = probe.read()

    result = verdict(second, host(), None, HealthThresholds(expected_gpus=len(first)))
    summary: list[Any] = [
        (r.index, r.name, r.temperature_c, r.power_w, r.remapped_rows, r.nvlink_up, r.probe_errors)
        for r in second
    ]
    print("NVML readings:", summary, "verdict:", result)
    assert len(first) >= 1
    assert all(r.lost is None and r.name and r.uuid.startswith("GPU-") for r in second)
    assert all(r.temperature_c is not None and r.memory_total_bytes for r in second)
    assert result.health is not Health.FAILED, result.reasons
