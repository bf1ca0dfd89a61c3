"""The Linux host probe: free disk on the checkpoint path, available memory and load.

Reads ``shutil.disk_usage`` on the checkpoint path (or its nearest existing parent, the file
system a checkpoint would land on), ``MemTotal``/``MemAvailable`` from ``/proc/meminfo`` and
``os.getloadavg``. Each source is injectable so tests need no particular host. A source that
fails leaves its fields ``None`` and adds a line to ``probe_errors``; :meth:`LinuxHostProbe.read`
never raises.

Must not import ``scheduler``, torch or pynvml.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from agents.health.probe import HostReading

PROC_MEMINFO = Path("/proc/meminfo")


class DiskUsage(NamedTuple):
    """What ``shutil.disk_usage`` returns (bytes)."""

    total: int
    used: int
    free: int


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse ``/proc/meminfo`` into bytes per key.

    Args:
        text: the file's content, lines like ``"MemAvailable:   12345 kB"``.

    Returns:
        Key to bytes (``kB`` values times 1024; unit-less values as they are). Lines that do
        not parse are skipped.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
        values[key.strip()] = int(parts[0]) * scale
    return values


def existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (at worst the root)."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


class LinuxHostProbe:
    """A :class:`~agents.health.probe.HostProbe` for Linux hosts.

    Args:
        checkpoint_path: where the host's jobs write checkpoints.
        meminfo_path: the ``meminfo`` file to read.
        disk_usage: ``shutil.disk_usage``-like function.
        loadavg: ``os.getloadavg``-like function.
        cpu_count: ``os.cpu_count``-like function.
    """

    def __init__(
        self,
        checkpoint_path: Path,
        *,
        meminfo_path: Path = PROC_MEMINFO,
        disk_usage: Callable[[Path], DiskUsage] | None = None,
        loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
        cpu_count: Callable[[], int | None] = os.cpu_count,
    ) -> None:
        """Store the sources; reads nothing yet."""
        self._checkpoint_path = checkpoint_path
        self._meminfo_path = meminfo_path
        self._disk_usage = disk_usage if disk_usage is not None else _shutil_disk_usage
        self._loadavg = loadavg
        self._cpu_count = cpu_count

    def read(self) -> HostReading:
        """Poll disk, memory and load once (see :meth:`agents.health.probe.HostProbe.read`)."""
        errors: list[str] = []
        disk_total = disk_free = None
        try:
            usage = self._disk_usage(existing_ancestor(self._checkpoint_path))
            disk_total, disk_free = usage.total, usage.free
        except OSError as exc:
            errors.append(f"disk: {exc}")
        mem_total = mem_available = None
        try:
            meminfo = parse_meminfo(self._meminfo_path.read_text(encoding="ascii"))
            mem_total = meminfo.get("MemTotal")
            mem_available = meminfo.get("MemAvailable")
            if mem_total is None or mem_available is None:
                errors.append(f"memory: MemTotal/MemAvailable missing in {self._meminfo_path}")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"memory: {exc}")
        load: tuple[float | None, float | None, float | None] = (None, None, None)
        try:
            load = self._loadavg()
        except OSError as exc:
            errors.append(f"load: {exc}")
        return HostReading(
            checkpoint_path=str(self._checkpoint_path),
            disk_total_bytes=disk_total,
            disk_free_bytes=disk_free,
            mem_total_bytes=mem_total,
            mem_available_bytes=mem_available,
            load_1m=load[0],
            load_5m=load[1],
            load_15m=load[2],
            cpu_count=self._cpu_count(),
            probe_errors=tuple(errors),
        )


def _shutil_disk_usage(path: Path) -> DiskUsage:
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.used, usage.free)
