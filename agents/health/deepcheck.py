"""The deep health check: proves a host's GPUs compute, remember and communicate at full speed.

Per GPU: bf16 matmul throughput against the GPU's reference figure, bf16 matmul accuracy
against fp32 (silent data corruption), a pattern write/read test over most of the free memory,
and host-to-device bandwidth from pinned memory. Across the host's GPUs: an NCCL all-reduce
measuring bus bandwidth (skipped, with a reason, on a one-GPU host). Each result carries the
measured figure, its unit, the threshold and pass/fail; a throughput without a reference figure
for the GPU (and none configured) is reported as ``unjudged`` rather than passed.

On a host without a CUDA device the check is skipped with a reason; ``check_command`` exits 0
then, or 2 with ``require_gpu``. ``device="cpu"`` runs the same code on CPU tensors with tiny
sizes (all-reduce over gloo), which is how the logic is tested without a GPU.

Imports torch (through :mod:`agents.health.benchmarks`); import this module lazily. Must not
import ``scheduler``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Literal, TextIO

import torch
from pydantic import BaseModel, ConfigDict, Field

from agents.health import benchmarks as bench
from agents.health.reference import GpuReference, reference_for
from topology.errors import ExitCode

GIB = 1024**3
MIB = 1024**2

#: ``check_command`` exit codes (from the table every firsthop command line shares).
EXIT_OK = ExitCode.OK
"""Every check passed or was unjudged, or there is no GPU and none was required."""
EXIT_FAILED = ExitCode.FAILED
"""At least one check failed."""
EXIT_NO_GPU = ExitCode.BAD_INPUT
"""No CUDA device, and ``require_gpu`` was set (refused as it stands)."""

Details = dict[str, str | int | float | bool | None]


class CheckName(StrEnum):
    """The checks of a deep health check (also the ``name`` of their results)."""

    MATMUL = "matmul_throughput"
    ACCURACY = "matmul_accuracy"
    MEMORY = "memory_pattern"
    H2D = "h2d_bandwidth"
    ALLREDUCE = "allreduce_busbw"


class Outcome(StrEnum):
    """How a check ended."""

    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"
    UNJUDGED = "unjudged"
    """Measured, but no threshold is known for this GPU: configure one."""


class DeepCheckConfig(BaseModel):
    """What the deep health check runs and the thresholds it judges by.

    Attributes:
        device: ``cuda`` (real check) or ``cpu`` (tiny sizes, tests and demos).
        require_gpu: without a CUDA device, fail (exit 2) instead of skipping (exit 0).
        checks: which checks to run.
        gpu_indices: CUDA devices to check; ``None`` for all.
        matmul_size: side of the square matmul (8192, as in the reference figure).
        matmul_iterations: timed matmuls (median taken).
        matmul_warmup: untimed matmuls first.
        matmul_dtype: ``bfloat16`` (the reference) or ``float32``.
        matmul_expected_tflops: overrides the reference figure of the GPU.
        matmul_pass_fraction: pass at this fraction of the expected figure.
        accuracy_size: side of the accuracy matmul.
        accuracy_max_relative_error: fail above this relative error vs fp32 (healthy H100 bf16:
            1.65e-3 at 512).
        memory_fraction_of_free: share of the device's free memory the pattern test covers.
        memory_max_bytes: caps the pattern test (the CPU path uses 64 MiB when unset).
        memory_chunk_bytes: allocation size of the pattern test.
        memory_patterns: 32-bit patterns; -1 is the address pattern (word i holds i).
        memory_min_gbytes_per_s: optional pattern-throughput floor; ``None`` reports it unjudged.
        h2d_bytes: bytes per host-to-device copy.
        h2d_iterations: timed copies (median taken).
        h2d_warmup: untimed copies first.
        h2d_expected_gbytes_per_s: overrides the reference figure of the GPU.
        h2d_pass_fraction: pass at this fraction of the expected figure.
        allreduce_bytes: bytes per all-reduce.
        allreduce_iterations: timed all-reduces (mean taken).
        allreduce_warmup: untimed all-reduces first.
        allreduce_min_busbw_gbytes_per_s: bus-bandwidth floor; ``None`` reports it unjudged (no
            reference figure has been measured yet).
        allreduce_timeout_s: ranks still running after this are killed and the check fails.
        allreduce_world_size: CPU path only: gloo ranks to run (default 2).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cuda", "cpu"] = "cuda"
    require_gpu: bool = False
    checks: frozenset[CheckName] = frozenset(CheckName)
    gpu_indices: tuple[int, ...] | None = None
    matmul_size: int = Field(default=8192, ge=1)
    matmul_iterations: int = Field(default=20, ge=1)
    matmul_warmup: int = Field(default=3, ge=0)
    matmul_dtype: bench.MatmulDtype = "bfloat16"
    matmul_expected_tflops: float | None = Field(default=None, gt=0)
    matmul_pass_fraction: float = Field(default=0.85, gt=0, le=1)
    accuracy_size: int = Field(default=512, ge=1)
    accuracy_max_relative_error: float = Field(default=1e-2, gt=0)
    memory_fraction_of_free: float = Field(default=0.85, gt=0, le=0.95)
    memory_max_bytes: int | None = Field(default=None, ge=4)
    memory_chunk_bytes: int = Field(default=1 * GIB, ge=4)
    memory_patterns: tuple[int, ...] = (
        0x00000000,
        0xFFFFFFFF,
        0xAAAAAAAA,
        0x55555555,
        bench.ADDRESS_PATTERN,
    )
    memory_min_gbytes_per_s: float | None = Field(default=None, gt=0)
    h2d_bytes: int = Field(default=1 * GIB, ge=1)
    h2d_iterations: int = Field(default=10, ge=1)
    h2d_warmup: int = Field(default=2, ge=0)
    h2d_expected_gbytes_per_s: float | None = Field(default=None, gt=0)
    h2d_pass_fraction: float = Field(default=0.85, gt=0, le=1)
    allreduce_bytes: int = Field(default=256 * MIB, ge=4)
    allreduce_iterations: int = Field(default=20, ge=1)
    allreduce_warmup: int = Field(default=5, ge=0)
    allreduce_min_busbw_gbytes_per_s: float | None = Field(default=None, gt=0)
    allreduce_timeout_s: float = Field(default=120.0, gt=0)
    allreduce_world_size: int = Field(default=2, ge=1)


class CheckResult(BaseModel):
    """One check's outcome.

    Attributes:
        name: which check.
        gpu_index: the GPU, or ``None`` for host-wide checks (all-reduce).
        outcome: pass, fail, skipped or unjudged.
        measured: the figure, ``None`` when skipped or errored.
        unit: the figure's unit.
        threshold: the figure judged against, ``None`` when there is none.
        higher_is_better: whether ``measured`` must be at least (or at most) ``threshold``.
        details: supporting figures and, when skipped or errored, the reason.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: CheckName
    gpu_index: int | None
    outcome: Outcome
    measured: float | None
    unit: str
    threshold: float | None
    higher_is_better: bool = True
    details: Details = Field(default_factory=dict)


class DeviceInfo(BaseModel):
    """A device the check ran on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    name: str
    memory_total_bytes: int | None = None


class DeepCheckReport(BaseModel):
    """Everything a deep health check found; serialise with ``model_dump_json``.

    Attributes:
        device: ``cuda`` or ``cpu``.
        devices: the devices checked.
        results: one result per check (and GPU).
        skipped_reason: why nothing ran (e.g. ``"no CUDA device"``), else ``None``.
        duration_s: wall time of the whole check.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cuda", "cpu"]
    devices: tuple[DeviceInfo, ...] = ()
    results: tuple[CheckResult, ...] = ()
    skipped_reason: str | None = None
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        """No check failed (a skipped report passes; see :meth:`exit_code`)."""
        return all(result.outcome is not Outcome.FAIL for result in self.results)

    def exit_code(self, *, require_gpu: bool) -> int:
        """The exit code of ``firsthop-agent check`` for this report (see ``EXIT_*``)."""
        if self.skipped_reason is not None:
            return EXIT_NO_GPU if require_gpu else EXIT_OK
        return EXIT_OK if self.passed else EXIT_FAILED


def judge(measured: float, threshold: float | None, *, higher_is_better: bool = True) -> Outcome:
    """PASS when ``measured`` is on the right side of ``threshold``; UNJUDGED without one."""
    if threshold is None:
        return Outcome.UNJUDGED
    ok = measured >= threshold if higher_is_better else measured <= threshold
    return Outcome.PASS if ok else Outcome.FAIL


def run_deep_check(
    config: DeepCheckConfig,
    *,
    fault_hook: bench.PatternFaultHook | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> DeepCheckReport:
    """Run the configured checks.

    Args:
        config: what to run and the thresholds.
        fault_hook: corrupts memory between pattern write and read (tests only).
        clock: monotonic clock for the report's duration.

    Returns:
        The report; with ``device="cuda"`` and no CUDA device, a report with
        ``skipped_reason`` set and no results.
    """
    start = clock()
    if config.device == "cuda" and not torch.cuda.is_available():
        return DeepCheckReport(device="cuda", skipped_reason="no CUDA device")
    devices = _devices(config)
    results: list[CheckResult] = []
    for info in devices:
        device = torch.device(config.device, info.index)
        results.extend(_per_device_checks(config, device, info, fault_hook))
    if CheckName.ALLREDUCE in config.checks:
        results.append(_allreduce_check(config, len(devices)))
    return DeepCheckReport(
        device=config.device,
        devices=tuple(devices),
        results=tuple(results),
        duration_s=clock() - start,
    )


def _devices(config: DeepCheckConfig) -> list[DeviceInfo]:
    if config.device == "cpu":
        return [DeviceInfo(index=0, name="cpu")]
    indices = config.gpu_indices or tuple(range(torch.cuda.device_count()))
    infos: list[DeviceInfo] = []
    for index in indices:
        props = torch.cuda.get_device_properties(index)
        infos.append(
            DeviceInfo(index=index, name=props.name, memory_total_bytes=props.total_memory)
        )
    return infos


def _per_device_checks(
    config: DeepCheckConfig,
    device: torch.device,
    info: DeviceInfo,
    fault_hook: bench.PatternFaultHook | None,
) -> list[CheckResult]:
    reference = reference_for(info.name) if device.type == "cuda" else None
    gpu = info.index if device.type == "cuda" else None
    runs: list[tuple[CheckName, str, Callable[[], CheckResult]]] = [
        (CheckName.MATMUL, "TFLOP/s", lambda: _matmul_check(config, device, gpu, reference)),
        (CheckName.ACCURACY, "relative error", lambda: _accuracy_check(config, device, gpu)),
        (
            CheckName.MEMORY,
            "mismatched words",
            lambda: _memory_check(config, device, gpu, fault_hook),
        ),
        (CheckName.H2D, "GB/s", lambda: _h2d_check(config, device, gpu, reference)),
    ]
    results: list[CheckResult] = []
    for name, unit, run in runs:
        if name not in config.checks:
            continue
        try:
            results.append(run())
        except (RuntimeError, ValueError, MemoryError) as exc:
            results.append(_errored(name, gpu, unit, exc))
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def _errored(name: CheckName, gpu: int | None, unit: str, exc: BaseException) -> CheckResult:
    """A check that raised (CUDA error, out of memory...) fails with the error as detail."""
    return CheckResult(
        name=name,
        gpu_index=gpu,
        outcome=Outcome.FAIL,
        measured=None,
        unit=unit,
        threshold=None,
        details={"error": f"{type(exc).__name__}: {exc}"},
    )


def _matmul_check(
    config: DeepCheckConfig, device: torch.device, gpu: int | None, ref: GpuReference | None
) -> CheckResult:
    m = bench.measure_matmul(
        device,
        size=config.matmul_size,
        iterations=config.matmul_iterations,
        warmup=config.matmul_warmup,
        dtype=config.matmul_dtype,
    )
    expected = config.matmul_expected_tflops
    source = "config"
    if expected is None and ref is not None and config.matmul_dtype == "bfloat16":
        expected, source = ref.matmul_bf16_tflops, ref.source
    threshold = None if expected is None else expected * config.matmul_pass_fraction
    details: Details = {
        "size": m.size,
        "dtype": config.matmul_dtype,
        "iterations": m.iterations,
        "median_ms": m.median_s * 1e3,
        "expected_tflops": expected,
        "expected_source": source if expected is not None else None,
        "datasheet_tflops": ref.datasheet_bf16_tflops if ref is not None else None,
    }
    if expected is None:
        details["note"] = "no reference figure for this GPU; set matmul_expected_tflops"
    return CheckResult(
        name=CheckName.MATMUL,
        gpu_index=gpu,
        outcome=judge(m.tflops, threshold),
        measured=m.tflops,
        unit="TFLOP/s",
        threshold=threshold,
        details=details,
    )


def _accuracy_check(config: DeepCheckConfig, device: torch.device, gpu: int | None) -> CheckResult:
    error = bench.matmul_relative_error(
        device, size=config.accuracy_size, dtype=config.matmul_dtype
    )
    threshold = config.accuracy_max_relative_error
    return CheckResult(
        name=CheckName.ACCURACY,
        gpu_index=gpu,
        outcome=judge(error, threshold, higher_is_better=False),
        measured=error,
        unit="relative error",
        threshold=threshold,
        higher_is_better=False,
        details={"size": config.accuracy_size, "dtype": config.matmul_dtype, "reference": "fp32"},
    )


def _memory_target_bytes(config: DeepCheckConfig, device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        target = int(free * config.memory_fraction_of_free)
    else:
        target = 64 * MIB
    if config.memory_max_bytes is not None:
        target = min(target, config.memory_max_bytes)
    return target


def _memory_check(
    config: DeepCheckConfig,
    device: torch.device,
    gpu: int | None,
    fault_hook: bench.PatternFaultHook | None,
) -> CheckResult:
    target = _memory_target_bytes(config, device)
    chunks = bench.allocate_chunks(device, target, config.memory_chunk_bytes)
    try:
        m = bench.pattern_test(chunks, config.memory_patterns, fault_hook=fault_hook)
    finally:
        chunks.clear()
    details: Details = {
        "bytes_tested": m.bytes_tested,
        "target_bytes": target,
        "chunks": m.chunks,
        "patterns": m.patterns,
        "elapsed_s": m.elapsed_s,
        "throughput_gbytes_per_s": m.gbytes_per_s,
        "min_throughput_gbytes_per_s": config.memory_min_gbytes_per_s,
        "first_mismatches": "; ".join(m.first_mismatches) or None,
    }
    outcome = judge(float(m.mismatches), 0.0, higher_is_better=False)
    if outcome is Outcome.PASS and config.memory_min_gbytes_per_s is not None:
        outcome = judge(m.gbytes_per_s, config.memory_min_gbytes_per_s)
    return CheckResult(
        name=CheckName.MEMORY,
        gpu_index=gpu,
        outcome=outcome,
        measured=float(m.mismatches),
        unit="mismatched words",
        threshold=0.0,
        higher_is_better=False,
        details=details,
    )


def _h2d_check(
    config: DeepCheckConfig, device: torch.device, gpu: int | None, ref: GpuReference | None
) -> CheckResult:
    m = bench.measure_h2d(
        device, nbytes=config.h2d_bytes, iterations=config.h2d_iterations, warmup=config.h2d_warmup
    )
    expected = config.h2d_expected_gbytes_per_s
    if expected is None and ref is not None:
        expected = ref.h2d_pinned_gbytes_per_s
    threshold = None if expected is None else expected * config.h2d_pass_fraction
    return CheckResult(
        name=CheckName.H2D,
        gpu_index=gpu,
        outcome=judge(m.gbytes_per_s, threshold),
        measured=m.gbytes_per_s,
        unit="GB/s",
        threshold=threshold,
        details={
            "bytes": m.nbytes,
            "pinned": m.pinned,
            "median_ms": m.median_s * 1e3,
            "expected_gbytes_per_s": expected,
        },
    )


def _allreduce_check(config: DeepCheckConfig, gpus: int) -> CheckResult:
    on_cpu = config.device == "cpu"
    world = config.allreduce_world_size if on_cpu else gpus
    if world < 2:
        return CheckResult(
            name=CheckName.ALLREDUCE,
            gpu_index=None,
            outcome=Outcome.SKIPPED,
            measured=None,
            unit="GB/s",
            threshold=None,
            details={"reason": f"{world} GPU: no peer to all-reduce with"},
        )
    try:
        m = bench.measure_allreduce(
            world_size=world,
            backend="gloo" if on_cpu else "nccl",
            nbytes=config.allreduce_bytes,
            iterations=config.allreduce_iterations,
            warmup=config.allreduce_warmup,
            timeout_s=config.allreduce_timeout_s,
        )
    except (RuntimeError, TimeoutError, OSError) as exc:
        return _errored(CheckName.ALLREDUCE, None, "GB/s", exc)
    threshold = config.allreduce_min_busbw_gbytes_per_s
    outcome = judge(m.busbw_gbytes_per_s, threshold) if m.correct else Outcome.FAIL
    return CheckResult(
        name=CheckName.ALLREDUCE,
        gpu_index=None,
        outcome=outcome,
        measured=m.busbw_gbytes_per_s,
        unit="GB/s",
        threshold=threshold,
        details={
            "world_size": m.world_size,
            "backend": m.backend,
            "bytes": m.nbytes,
            "mean_ms": m.mean_s * 1e3,
            "algbw_gbytes_per_s": m.algbw_gbytes_per_s,
            "sum_correct": m.correct,
        },
    )


def format_report(report: DeepCheckReport) -> str:
    """A plain-text table of the report, for people."""
    if report.skipped_reason is not None:
        return f"deep health check skipped: {report.skipped_reason}\n"
    lines = [f"deep health check on {report.device} ({report.duration_s:.1f} s)"]
    lines.extend(f"  device {d.index}: {d.name}" for d in report.devices)
    lines.append(
        f"  {'gpu':>3}  {'check':<18} {'outcome':<9} {'measured':>12}  {'threshold':>12}  unit"
    )
    for r in report.results:
        gpu = "-" if r.gpu_index is None else str(r.gpu_index)
        measured = "-" if r.measured is None else f"{r.measured:.4g}"
        sign = ">=" if r.higher_is_better else "<="
        threshold = "-" if r.threshold is None else f"{sign} {r.threshold:.4g}"
        lines.append(
            f"  {gpu:>3}  {r.name:<18} {r.outcome:<9} {measured:>12}  {threshold:>12}  {r.unit}"
        )
        for key in ("reason", "error", "note", "first_mismatches"):
            if r.details.get(key):
                lines.append(f"       {key}: {r.details[key]}")
    lines.append("PASSED" if report.passed else "FAILED")
    return "\n".join(lines) + "\n"


def check_command(
    config: DeepCheckConfig,
    *,
    output: Literal["text", "json"] = "text",
    out: TextIO | None = None,
) -> int:
    """Body of ``firsthop-agent check``: run the check, print the report, return the exit code.

    Args:
        config: the check configuration (``require_gpu`` decides the no-GPU exit code).
        output: ``text`` for people, ``json`` for machines (the report's JSON).
        out: where to print (standard output by default).

    Returns:
        ``EXIT_OK`` (0) when everything passed or was unjudged, or when there is no CUDA
        device and none was required ("skipped: no CUDA device"); ``EXIT_FAILED`` (1) when a
        check failed; ``EXIT_NO_GPU`` (2) when there is no CUDA device and ``require_gpu``.
    """
    stream = out if out is not None else sys.stdout
    report = run_deep_check(config)
    if output == "json":
        stream.write(report.model_dump_json(indent=2) + "\n")
    else:
        stream.write(format_report(report))
    return report.exit_code(require_gpu=config.require_gpu)
