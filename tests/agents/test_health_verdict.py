"""The health verdict: one test per fault class, clean readings, ordering, stability, purity."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from health_builders import GIB, gpu, gpus, host, replace_gpu
from pydantic import ValidationError

from agents.health.probe import EccCounts, RemappedRows, ThrottleReason
from agents.health.verdict import (
    DEFAULT_FAILED_XIDS,
    XID_DESCRIPTIONS,
    Health,
    HealthThresholds,
    PreviousPoll,
    ReasonCode,
    Verdict,
    verdict,
)

T = HealthThresholds()


def judge(**gpu0_changes: Any) -> Verdict:
    """Verdict of eight healthy GPUs with GPU 0 changed, on a healthy host."""
    return verdict(replace_gpu(gpus(), 0, **gpu0_changes), host(), None, T)


def test_clean_poll_is_healthy_with_no_reasons() -> None:
    result = verdict(gpus(), host(), None, T)

    assert result == Verdict(Health.HEALTHY, ())


def test_reason_codes_are_stable_strings() -> None:
    # Changing one of these breaks the scheduler and dashboards: only add codes.
    assert {code.value for code in ReasonCode} == {
        "ecc_uncorrectable",
        "row_remap_pending",
        "row_remap_failure",
        "gpu_lost",
        "gpu_missing",
        "xid_critical",
        "disk_full",
        "throttle_hw_slowdown",
        "throttle_hw_thermal",
        "throttle_sw_thermal",
        "throttle_hw_power_brake",
        "throttle_sw_power_cap",
        "temperature_high",
        "ecc_correctable_rising",
        "xid_warning",
        "nvlink_down",
        "memory_low",
        "disk_low",
        "probe_error",
    }


def test_health_words_are_the_ones_the_scheduler_maps() -> None:
    from scheduler.core.states import Health as SchedulerHealth
    from scheduler.core.states import health_from_external

    mapped = {word: health_from_external(word.value) for word in Health}

    assert mapped == {
        Health.HEALTHY: SchedulerHealth.HEALTHY,
        Health.SUSPECT: SchedulerHealth.SUSPECT,
        Health.FAILED: SchedulerHealth.FAILED,
    }


# -- FAILED ---------------------------------------------------------------------------------


def test_uncorrectable_volatile_ecc_fails() -> None:
    result = judge(ecc=EccCounts(0, 2, 0, 2))

    assert result.health is Health.FAILED
    assert result.codes == ("ecc_uncorrectable",)
    assert result.reasons[0].gpu_index == 0


def test_uncorrectable_ecc_only_in_lifetime_counter_is_healthy() -> None:
    # Aggregate errors are history (already remapped at a reset); volatile ones are live.
    assert judge(ecc=EccCounts(0, 0, 5, 3)).health is Health.HEALTHY


def test_pending_row_remap_fails() -> None:
    result = judge(remapped_rows=RemappedRows(0, 1, pending=True, failure=False))

    assert (result.health, result.codes) == (Health.FAILED, ("row_remap_pending",))


def test_row_remap_failure_fails() -> None:
    result = judge(remapped_rows=RemappedRows(3, 0, pending=False, failure=True))

    assert (result.health, result.codes) == (Health.FAILED, ("row_remap_failure",))


def test_unreadable_gpu_is_lost() -> None:
    result = judge(lost="temperature: GPU is lost")

    assert (result.health, result.codes) == (Health.FAILED, ("gpu_lost",))
    assert "GPU is lost" in result.reasons[0].message


def test_fewer_gpus_than_expected_is_missing() -> None:
    result = verdict(gpus(7), host(), None, HealthThresholds(expected_gpus=8))

    assert (result.health, result.codes) == (Health.FAILED, ("gpu_missing",))
    assert result.reasons[0].gpu_index is None


def test_gpu_that_vanished_since_the_previous_poll_is_lost() -> None:
    previous = PreviousPoll(gpus(8), elapsed_s=10.0)

    result = verdict(gpus(8)[:3] + gpus(8)[4:], host(), previous, T)

    assert (result.health, result.codes) == (Health.FAILED, ("gpu_lost",))
    assert result.reasons[0].gpu_index == 3


@pytest.mark.parametrize("xid", [46, 48, 63, 64, 74, 79, 94, 95])
def test_critical_xid_fails(xid: int) -> None:
    result = judge(xid_events=(xid,))

    assert (result.health, result.codes) == (Health.FAILED, ("xid_critical",))
    assert f"XID {xid} ({XID_DESCRIPTIONS[xid]})" in result.reasons[0].message


def test_lost_gpu_keeps_the_xid_that_announced_it() -> None:
    result = judge(lost="GPU is lost", xid_events=(79,))

    assert result.codes == ("gpu_lost", "xid_critical")


def test_failed_xid_set_is_configurable() -> None:
    lenient = HealthThresholds(
        failed_xids=DEFAULT_FAILED_XIDS - {94}, suspect_xids=frozenset({92, 94})
    )

    result = verdict(replace_gpu(gpus(), 0, xid_events=(94,)), host(), None, lenient)

    assert (result.health, result.codes) == (Health.SUSPECT, ("xid_warning",))


def test_application_xids_do_not_affect_health() -> None:
    # 13 (graphics engine exception), 31 (MMU fault), 43, 45: application errors.
    assert judge(xid_events=(13, 31, 43, 45)).health is Health.HEALTHY


def test_disk_full_on_checkpoint_path_fails() -> None:
    result = verdict(gpus(), host(disk_free_bytes=GIB // 2), None, T)

    assert (result.health, result.codes) == (Health.FAILED, ("disk_full",))
    assert "/checkpoints" in result.reasons[0].message


# -- SUSPECT --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (ThrottleReason.HW_SLOWDOWN, "throttle_hw_slowdown"),
        (ThrottleReason.HW_THERMAL_SLOWDOWN, "throttle_hw_thermal"),
        (ThrottleReason.SW_THERMAL_SLOWDOWN, "throttle_sw_thermal"),
        (ThrottleReason.HW_POWER_BRAKE_SLOWDOWN, "throttle_hw_power_brake"),
    ],
)
def test_thermal_and_power_brake_throttling_is_suspect(reason: ThrottleReason, code: str) -> None:
    result = judge(throttle_reasons=frozenset({reason, ThrottleReason.SW_POWER_CAP}))

    assert (result.health, result.codes) == (Health.SUSPECT, (code,))


def test_power_cap_idle_and_boost_throttling_are_normal() -> None:
    normal = frozenset(
        {ThrottleReason.SW_POWER_CAP, ThrottleReason.GPU_IDLE, ThrottleReason.SYNC_BOOST}
    )

    assert judge(throttle_reasons=normal).health is Health.HEALTHY


def test_power_cap_can_be_made_suspect() -> None:
    strict = HealthThresholds(suspect_throttle_reasons=frozenset({ThrottleReason.SW_POWER_CAP}))

    result = verdict(
        replace_gpu(gpus(), 2, throttle_reasons=frozenset({ThrottleReason.SW_POWER_CAP})),
        host(),
        None,
        strict,
    )

    assert result.codes == ("throttle_sw_power_cap",)


def test_temperature_above_threshold_is_suspect() -> None:
    assert judge(temperature_c=85).health is Health.HEALTHY
    result = judge(temperature_c=86)

    assert (result.health, result.codes) == (Health.SUSPECT, ("temperature_high",))


def _ecc_poll(corrected_before: int, corrected_now: int, elapsed_s: float) -> Verdict:
    before = replace_gpu(gpus(), 1, ecc=EccCounts(corrected_before, 0, corrected_before, 0))
    now = replace_gpu(gpus(), 1, ecc=EccCounts(corrected_now, 0, corrected_now, 0))
    return verdict(now, host(), PreviousPoll(before, elapsed_s), T)


def test_rising_correctable_ecc_is_suspect() -> None:
    result = _ecc_poll(100, 150, elapsed_s=60.0)  # 50 in a minute: 3000/h

    assert (result.health, result.codes) == (Health.SUSPECT, ("ecc_correctable_rising",))
    assert result.reasons[0].gpu_index == 1


@pytest.mark.parametrize(
    ("before", "now", "elapsed_s"),
    [
        (100, 105, 1.0),  # fast but only five errors: noise
        (100, 150, 7200.0),  # fifty in two hours: 25/h, below the rate
        (100, 100, 60.0),  # unchanged
        (100, 3, 60.0),  # counters reset by a driver reload
    ],
)
def test_correctable_ecc_below_rate_or_count_is_healthy(
    before: int, now: int, elapsed_s: float
) -> None:
    assert _ecc_poll(before, now, elapsed_s).health is Health.HEALTHY


def test_correctable_ecc_needs_a_previous_poll() -> None:
    assert judge(ecc=EccCounts(10_000, 0, 10_000, 0)).health is Health.HEALTHY


def test_high_single_bit_error_rate_xid_is_suspect() -> None:
    result = judge(xid_events=(92,))

    assert (result.health, result.codes) == (Health.SUSPECT, ("xid_warning",))


def test_one_nvlink_link_down_while_others_up_is_suspect() -> None:
    links = (True,) * 17 + (False,)

    result = judge(nvlink_up=links)

    assert (result.health, result.codes) == (Health.SUSPECT, ("nvlink_down",))
    assert "[17]" in result.reasons[0].message


def test_gpu_with_every_nvlink_down_while_peers_are_up_is_suspect() -> None:
    result = judge(nvlink_up=(False,) * 18)

    assert (result.health, result.codes) == (Health.SUSPECT, ("nvlink_down",))
    assert result.reasons[0].gpu_index == 0


def test_no_nvlink_at_all_is_healthy() -> None:
    pcie = tuple(dataclasses.replace(g, nvlink_up=None) for g in gpus())

    assert verdict(pcie, host(), None, T).health is Health.HEALTHY


def test_low_host_memory_is_suspect() -> None:
    result = verdict(gpus(), host(mem_available_bytes=10 * GIB), None, T)

    assert (result.health, result.codes) == (Health.SUSPECT, ("memory_low",))


def test_low_disk_is_suspect_before_it_is_full() -> None:
    result = verdict(gpus(), host(disk_free_bytes=20 * GIB), None, T)

    assert (result.health, result.codes) == (Health.SUSPECT, ("disk_low",))


def test_probe_errors_are_suspect_unless_disabled() -> None:
    readings = replace_gpu(gpus(), 5, probe_errors=("power: Unknown Error",))
    quiet = HealthThresholds(suspect_on_probe_error=False)

    result = verdict(readings, host(probe_errors=("load: unavailable",)), None, T)

    assert (result.health, result.codes) == (Health.SUSPECT, ("probe_error", "probe_error"))
    assert verdict(readings, host(), None, quiet).health is Health.HEALTHY


# -- combination, order, purity -------------------------------------------------------------


def test_worst_reason_wins_and_failed_reasons_come_first() -> None:
    readings = replace_gpu(gpus(), 3, temperature_c=95, ecc=EccCounts(0, 1, 0, 1))
    readings = replace_gpu(readings, 1, xid_events=(79,))

    result = verdict(readings, host(mem_available_bytes=GIB), None, T)

    assert result.health is Health.FAILED
    assert result.codes == ("ecc_uncorrectable", "xid_critical", "memory_low", "temperature_high")
    assert [r.health for r in result.reasons] == [Health.FAILED] * 2 + [Health.SUSPECT] * 2


def test_verdict_is_deterministic_and_independent_of_gpu_order() -> None:
    readings = replace_gpu(gpus(), 2, temperature_c=90, xid_events=(48,))

    first = verdict(readings, host(), None, T)

    assert verdict(tuple(reversed(readings)), host(), None, T) == first
    assert verdict(iter(readings), host(), None, T) == first


def test_thresholds_reject_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra"):
        HealthThresholds.model_validate({"max_temp": 80})
    with pytest.raises(ValidationError, match="less than or equal"):
        HealthThresholds(disk_low_fraction=2.0)


def test_every_default_failed_xid_is_described() -> None:
    assert XID_DESCRIPTIONS.keys() >= DEFAULT_FAILED_XIDS


def test_builder_gpu_is_healthy_on_its_own() -> None:
    assert (
        verdict((gpu(),), host(), None, HealthThresholds(expected_gpus=1)).health is Health.HEALTHY
    )
