"""The fake GPU and host probes: realistic defaults, every scriptable fault, determinism."""

from __future__ import annotations

import dataclasses

import pytest
from health_builders import GIB

from agents.health.errors import HealthProbeError
from agents.health.fake import (
    H100_NAME,
    FakeGpuProbe,
    FakeHostProbe,
    Fault,
    FaultKind,
    fake_uuid,
    parse_fault,
)
from agents.health.probe import GpuProbe, GpuReading, HostProbe, ThrottleReason
from agents.health.verdict import Health, HealthThresholds, PreviousPoll, verdict
from topology.errors import InvalidInputError

T = HealthThresholds(expected_gpus=4)


def judge(probe: FakeGpuProbe) -> tuple[Health, tuple[str, ...]]:
    result = verdict(probe.read(), FakeHostProbe().read(), None, T)
    return result.health, result.codes


def test_fakes_satisfy_the_probe_protocols() -> None:
    assert isinstance(FakeGpuProbe(2), GpuProbe)
    assert isinstance(FakeHostProbe(), HostProbe)


def test_fresh_fake_gpus_look_like_idle_h100s_and_are_healthy() -> None:
    readings = FakeGpuProbe(4).read()

    assert [r.index for r in readings] == [0, 1, 2, 3]
    assert {r.name for r in readings} == {H100_NAME}
    assert (readings[0].temperature_c, readings[0].power_w) == (34, 72.0)
    assert readings[0].nvlink_up == (True,) * 18
    assert readings[0].xid_events == ()
    assert verdict(readings, FakeHostProbe().read(), None, T).health is Health.HEALTHY


def test_uuids_are_stable_per_seed_and_distinct_across_seeds() -> None:
    a1 = [r.uuid for r in FakeGpuProbe(3, seed="host-a").read()]
    a2 = [r.uuid for r in FakeGpuProbe(3, seed="host-a").read()]
    b = [r.uuid for r in FakeGpuProbe(3, seed="host-b").read()]

    assert a1 == a2
    assert len(set(a1 + b)) == 6
    assert a1[0] == fake_uuid("host-a", 0)
    assert a1[0].startswith("GPU-")


def test_scripted_faults_produce_their_verdicts() -> None:
    probe = FakeGpuProbe(4)

    probe.set_temperature(0, 92)
    assert judge(probe) == (Health.SUSPECT, ("temperature_high",))
    probe.clear(0)
    probe.add_ecc_errors(1, uncorrected=1)
    assert judge(probe) == (Health.FAILED, ("ecc_uncorrectable",))
    probe.clear(1)
    probe.set_pending_remap(2)
    assert judge(probe) == (Health.FAILED, ("row_remap_pending",))
    probe.clear(2)
    probe.set_remap_failure(3)
    assert judge(probe) == (Health.FAILED, ("row_remap_failure",))
    probe.clear(3)
    probe.set_throttle(0, [ThrottleReason.HW_THERMAL_SLOWDOWN])
    assert judge(probe) == (Health.SUSPECT, ("throttle_hw_thermal",))
    probe.set_throttle(0, [])
    probe.set_nvlink_down(1, 5)
    assert judge(probe) == (Health.SUSPECT, ("nvlink_down",))
    probe.clear(1)
    assert judge(probe) == (Health.HEALTHY, ())


def test_xid_is_delivered_once_like_an_nvml_event() -> None:
    probe = FakeGpuProbe(4)
    probe.inject_xid(2, 48)
    probe.inject_xid(2, 63)

    first, second = probe.read(), probe.read()

    assert first[2].xid_events == (48, 63)
    assert second[2].xid_events == ()


def test_lost_gpu_stays_listed_but_unreadable() -> None:
    probe = FakeGpuProbe(4)
    probe.inject_xid(1, 79)
    probe.lose_gpu(1)

    readings = probe.read()

    assert readings[1].lost is not None
    assert readings[1].temperature_c is None
    assert judge_readings(readings) == (Health.FAILED, ("gpu_lost", "xid_critical"))


def judge_readings(readings: tuple[GpuReading, ...]) -> tuple[Health, tuple[str, ...]]:
    result = verdict(readings, FakeHostProbe().read(), None, T)
    return result.health, result.codes


def test_dropped_gpu_disappears_from_the_listing() -> None:
    probe = FakeGpuProbe(4)
    before = probe.read()
    probe.drop_gpu(3)

    after = probe.read()
    result = verdict(after, FakeHostProbe().read(), PreviousPoll(before, 5.0), T)

    assert [r.index for r in after] == [0, 1, 2]
    assert result.codes == ("gpu_lost", "gpu_missing")


def test_rising_ecc_counts_between_polls() -> None:
    probe = FakeGpuProbe(4)
    before = probe.read()
    probe.add_ecc_errors(0, corrected=40)

    result = verdict(probe.read(), FakeHostProbe().read(), PreviousPoll(before, 30.0), T)

    assert result.codes == ("ecc_correctable_rising",)


def test_schedule_applies_faults_before_the_given_poll() -> None:
    probe = FakeGpuProbe(
        2, schedule={3: [Fault(FaultKind.XID, 1, (79,)), Fault(FaultKind.LOST, 1)]}
    )

    polls = [probe.read() for _ in range(4)]

    assert [p[1].lost is None for p in polls] == [True, True, False, False]
    assert [p[1].xid_events for p in polls] == [(), (), (79,), ()]
    assert probe.polls == 4


def test_fake_without_nvlink_reports_none() -> None:
    assert FakeGpuProbe(2, nvlink_links=0).read()[0].nvlink_up is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("temp:0:91", Fault(FaultKind.TEMPERATURE, 0, (91,))),
        ("ecc:1:5", Fault(FaultKind.ECC, 1, (5,))),
        ("ecc:1:5:2", Fault(FaultKind.ECC, 1, (5, 2))),
        ("remap-pending:2", Fault(FaultKind.REMAP_PENDING, 2)),
        ("remap-failure:2", Fault(FaultKind.REMAP_FAILURE, 2)),
        ("lost:3", Fault(FaultKind.LOST, 3)),
        ("missing:3", Fault(FaultKind.MISSING, 3)),
        ("xid:0:79", Fault(FaultKind.XID, 0, (79,))),
        ("nvlink-down:0:4", Fault(FaultKind.NVLINK_DOWN, 0, (4,))),
        ("clear:0", Fault(FaultKind.CLEAR, 0)),
        (
            "throttle:1:hw_slowdown,sw_thermal_slowdown",
            Fault(
                FaultKind.THROTTLE,
                1,
                reasons=frozenset({ThrottleReason.HW_SLOWDOWN, ThrottleReason.SW_THERMAL_SLOWDOWN}),
            ),
        ),
        ("throttle:1:", Fault(FaultKind.THROTTLE, 1)),
    ],
)
def test_parse_fault_reads_every_kind(text: str, expected: Fault) -> None:
    assert parse_fault(text) == expected


@pytest.mark.parametrize(
    "text", ["boil:0", "xid:0", "xid:0:1:2", "temp:-1:50", "temp:x:50", "throttle:0:warp", "xid"]
)
def test_parse_fault_rejects_bad_text(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_fault(text)

    assert caught.value.reason == "invalid_fake_fault"


def test_fault_on_unknown_gpu_is_rejected() -> None:
    probe = FakeGpuProbe(2)

    with pytest.raises(InvalidInputError, match="fake GPU 5 does not exist"):
        probe.apply(parse_fault("xid:5:79"))


def test_closed_fake_probe_refuses_to_read() -> None:
    with FakeGpuProbe(1) as probe:
        probe.read()

    with pytest.raises(HealthProbeError, match="closed"):
        probe.read()


def test_fake_host_probe_is_scriptable() -> None:
    probe = FakeHostProbe("/ckpt")
    probe.reading = dataclasses.replace(probe.reading, disk_free_bytes=GIB // 4)

    result = verdict(FakeGpuProbe(4).read(), probe.read(), None, T)

    assert probe.read().checkpoint_path == "/ckpt"
    assert result.codes == ("disk_full",)
