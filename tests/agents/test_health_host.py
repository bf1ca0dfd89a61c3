"""The Linux host probe with injected sources, and once against this very host."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.health.host import DiskUsage, LinuxHostProbe, existing_ancestor, parse_meminfo
from agents.health.probe import HostProbe
from agents.health.verdict import Health, HealthThresholds, verdict

MEMINFO = """\
MemTotal:       16384000 kB
MemFree:         1024000 kB
MemAvailable:     512000 kB
HugePages_Total:       0
garbage line
"""


def test_parse_meminfo_reads_bytes() -> None:
    values = parse_meminfo(MEMINFO)

    assert values["MemTotal"] == 16384000 * 1024
    assert values["MemAvailable"] == 512000 * 1024
    assert values["HugePages_Total"] == 0
    assert "garbage line" not in values


def test_reads_injected_sources(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    seen: list[Path] = []

    def disk_usage(path: Path) -> DiskUsage:
        seen.append(path)
        return DiskUsage(total=100 * 2**30, used=99 * 2**30, free=2**29)

    probe = LinuxHostProbe(
        tmp_path / "ckpt" / "job-1",
        meminfo_path=meminfo,
        disk_usage=disk_usage,
        loadavg=lambda: (1.5, 1.0, 0.5),
        cpu_count=lambda: 8,
    )

    reading = probe.read()
    result = verdict((), reading, None, HealthThresholds())

    assert isinstance(probe, HostProbe)
    assert seen == [tmp_path]  # nearest existing parent of the checkpoint path
    assert reading.checkpoint_path == str(tmp_path / "ckpt" / "job-1")
    assert (reading.disk_total_bytes, reading.disk_free_bytes) == (100 * 2**30, 2**29)
    assert reading.mem_available_bytes == 512000 * 1024
    assert (reading.load_1m, reading.load_5m, reading.load_15m, reading.cpu_count) == (
        1.5,
        1.0,
        0.5,
        8,
    )
    assert reading.probe_errors == ()
    assert (result.health, result.codes) == (Health.FAILED, ("disk_full", "memory_low"))


def test_unreadable_sources_leave_fields_empty_and_say_why(tmp_path: Path) -> None:
    def broken_disk(path: Path) -> DiskUsage:
        raise PermissionError(13, "Permission denied", str(path))

    def broken_load() -> tuple[float, float, float]:
        raise OSError("load average unobtainable")

    probe = LinuxHostProbe(
        tmp_path,
        meminfo_path=tmp_path / "no-meminfo",
        disk_usage=broken_disk,
        loadavg=broken_load,
    )

    reading = probe.read()

    assert (reading.disk_free_bytes, reading.mem_total_bytes, reading.load_1m) == (None,) * 3
    assert [line.split(":")[0] for line in reading.probe_errors] == ["disk", "memory", "load"]
    assert verdict((), reading, None, HealthThresholds()).codes == ("probe_error",)


def test_meminfo_without_memavailable_is_a_probe_error(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1000 kB\n")

    reading = LinuxHostProbe(tmp_path, meminfo_path=meminfo).read()

    assert reading.mem_available_bytes is None
    assert reading.probe_errors == (f"memory: MemTotal/MemAvailable missing in {meminfo}",)


def test_existing_ancestor_walks_up(tmp_path: Path) -> None:
    assert existing_ancestor(tmp_path / "a" / "b") == tmp_path
    assert existing_ancestor(tmp_path) == tmp_path


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc/meminfo")
def test_reads_this_host(tmp_path: Path) -> None:
    reading = LinuxHostProbe(tmp_path).read()

    assert reading.probe_errors == ()
    assert reading.disk_total_bytes is not None
    assert reading.disk_total_bytes > 0
    assert reading.mem_available_bytes is not None
    assert reading.mem_total_bytes is not None
    assert 0 < reading.mem_available_bytes <= reading.mem_total_bytes
    assert reading.load_1m is not None
