"""Errors raised by the host health probes and the deep health check.

Each error derives from :class:`topology.errors.FirsthopError` and carries a stable ``reason``
that callers switch on. Must not import ``scheduler``, torch or pynvml.
"""

from __future__ import annotations

from topology.errors import FirsthopError


class HealthProbeError(FirsthopError):
    """A health probe could not be opened or read.

    Stable reasons: ``nvml_unavailable`` (no NVML library, no driver, or NVML failed to
    initialise), ``probe_failed`` (anything else).
    """

    status_code = "UNAVAILABLE"
    default_reason = "probe_failed"


class NvmlUnavailableError(HealthProbeError):
    """NVML cannot be used on this host (library or driver missing, or init failed)."""

    default_reason = "nvml_unavailable"


class DeepCheckConfigError(FirsthopError):
    """A deep health check configuration that can never run (reason ``invalid_deep_check``)."""

    status_code = "INVALID_ARGUMENT"
    default_reason = "invalid_deep_check"
