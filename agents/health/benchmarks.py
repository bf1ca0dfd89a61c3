"""The measurements behind the deep health check: matmul throughput and accuracy, the memory
pattern test, host-to-device bandwidth and all-reduce bus bandwidth.

Each function runs on whatever ``torch.device`` it is given: CUDA on a GPU host, CPU with tiny
sizes in tests, so the arithmetic and the pattern comparison are exercised for real without a
GPU. Functions return measurements; judging them against thresholds is
:mod:`agents.health.deepcheck`'s job. The all-reduce runs one process per rank
(``torch.multiprocessing``, spawn) joined through a ``FileStore`` in a temporary directory: no
network port, nothing outside the host.

Imports torch at import time; import this module lazily (only where a deep check runs). Must not
import ``scheduler``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: Called after a pattern is written and before it is read back:
#: ``hook(pattern_number, chunk_number, chunk)``. Tests corrupt ``chunk`` to prove the compare
#: sees it.
PatternFaultHook = Callable[[int, int, torch.Tensor], None]
Clock = Callable[[], float]
MatmulDtype = Literal["bfloat16", "float32"]

ADDRESS_PATTERN = -1
"""Pattern marker: element ``i`` of chunk ``c`` holds ``i + c`` (catches address faults)."""


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dtype(name: MatmulDtype) -> torch.dtype:
    return torch.bfloat16 if name == "bfloat16" else torch.float32


@dataclass(frozen=True, slots=True)
class MatmulMeasurement:
    """Throughput of square matmuls.

    Attributes:
        tflops: ``2 * size**3 / median_s / 1e12``.
        median_s: median time of one matmul.
        size: matrix side.
        iterations: timed matmuls.
    """

    tflops: float
    median_s: float
    size: int
    iterations: int


def matmul_tflops(size: int, seconds: float) -> float:
    """TFLOP/s of one ``size``-square matmul taking ``seconds`` (2 n^3 flops)."""
    return 2.0 * size**3 / seconds / 1e12


def measure_matmul(
    device: torch.device,
    *,
    size: int,
    iterations: int,
    warmup: int,
    dtype: MatmulDtype = "bfloat16",
    clock: Clock = time.perf_counter,
) -> MatmulMeasurement:
    """Time ``iterations`` square matmuls after ``warmup`` untimed ones; report the median."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, dtype=_dtype(dtype), device=device, generator=generator)
    b = torch.randn(size, size, dtype=_dtype(dtype), device=device, generator=generator)
    out = torch.empty_like(a)
    for _ in range(warmup):
        torch.matmul(a, b, out=out)
    times: list[float] = []
    for _ in range(iterations):
        synchronize(device)
        start = clock()
        torch.matmul(a, b, out=out)
        synchronize(device)
        times.append(clock() - start)
    median = statistics.median(times)
    return MatmulMeasurement(matmul_tflops(size, median), median, size, iterations)


def matmul_relative_error(device: torch.device, *, size: int, dtype: MatmulDtype) -> float:
    """Relative Frobenius error of a ``dtype`` matmul against an fp32 one of the same inputs.

    TF32 is turned off for the reference. A healthy H100 gives about 1.65e-3 for bf16 at 512
    (``shared/data/gpu/README.md``); silent data corruption gives far more.
    """
    generator = torch.Generator(device=device).manual_seed(1)
    a = torch.randn(size, size, device=device, generator=generator).to(_dtype(dtype))
    b = torch.randn(size, size, device=device, generator=generator).to(_dtype(dtype))
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        reference = torch.matmul(a.float(), b.float())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    result = torch.matmul(a, b).float()
    return float(torch.linalg.norm(result - reference) / torch.linalg.norm(reference))


@dataclass(frozen=True, slots=True)
class PatternMeasurement:
    """Outcome of the memory pattern test.

    Attributes:
        bytes_tested: memory covered by the test.
        chunks: allocations it was split into.
        patterns: patterns written and read back over all of it.
        mismatches: 32-bit words that read back wrong, over all patterns.
        elapsed_s: time of the writes and compares.
        gbytes_per_s: pattern throughput, ``2 * bytes_tested * patterns / elapsed_s / 1e9`` (each
            pattern writes and reads the memory once).
        first_mismatches: up to 8 ``"pattern P chunk C word W"`` locations.
    """

    bytes_tested: int
    chunks: int
    patterns: int
    mismatches: int
    elapsed_s: float
    gbytes_per_s: float
    first_mismatches: tuple[str, ...]


def pattern_word(pattern: int) -> int:
    """A 32-bit pattern as the signed int32 value torch stores (``0xFFFFFFFF`` -> ``-1``)."""
    value = pattern & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def allocate_chunks(
    device: torch.device, target_bytes: int, chunk_bytes: int
) -> list[torch.Tensor]:
    """Allocate int32 chunks totalling up to ``target_bytes``; stop early when memory runs out."""
    chunks: list[torch.Tensor] = []
    remaining = target_bytes
    while remaining >= 4:
        words = min(chunk_bytes, remaining) // 4
        try:
            chunks.append(torch.empty(words, dtype=torch.int32, device=device))
        except (torch.OutOfMemoryError, MemoryError):
            break
        remaining -= words * 4
    return chunks


def pattern_test(
    chunks: list[torch.Tensor],
    patterns: tuple[int, ...],
    *,
    slice_words: int = 64 * 1024 * 1024,
    fault_hook: PatternFaultHook | None = None,
    clock: Clock = time.perf_counter,
) -> PatternMeasurement:
    """Write each pattern over every chunk, read it back, count the words that differ.

    Args:
        chunks: int32 tensors on one device (see :func:`allocate_chunks`).
        patterns: 32-bit constants, or :data:`ADDRESS_PATTERN`.
        slice_words: compare this many words at a time (bounds the temporary memory).
        fault_hook: see :data:`PatternFaultHook`.
        clock: monotonic clock.
    """
    if not chunks:
        raise ValueError("no memory to test")
    device = chunks[0].device
    mismatches = 0
    where: list[str] = []
    synchronize(device)
    start = clock()
    for p, pattern in enumerate(patterns):
        for c, chunk in enumerate(chunks):
            _write(chunk, pattern, c, slice_words)
        if fault_hook is not None:
            for c, chunk in enumerate(chunks):
                fault_hook(p, c, chunk)
        for c, chunk in enumerate(chunks):
            for lo in range(0, chunk.numel(), slice_words):
                hi = min(lo + slice_words, chunk.numel())
                wrong = chunk[lo:hi] != _expected(pattern, c, lo, hi, device)
                count = int(torch.count_nonzero(wrong).item())
                if count:
                    mismatches += count
                    if len(where) < 8:
                        first = int(torch.nonzero(wrong)[0].item()) + lo
                        where.append(f"pattern {p} chunk {c} word {first}")
    synchronize(device)
    elapsed = clock() - start
    tested = sum(chunk.numel() * 4 for chunk in chunks)
    gbytes_per_s = 2.0 * tested * len(patterns) / elapsed / 1e9 if elapsed > 0 else float("inf")
    return PatternMeasurement(
        tested, len(chunks), len(patterns), mismatches, elapsed, gbytes_per_s, tuple(where)
    )


def _write(chunk: torch.Tensor, pattern: int, chunk_number: int, slice_words: int) -> None:
    if pattern != ADDRESS_PATTERN:
        chunk.fill_(pattern_word(pattern))
        return
    for lo in range(0, chunk.numel(), slice_words):
        hi = min(lo + slice_words, chunk.numel())
        torch.arange(lo + chunk_number, hi + chunk_number, dtype=torch.int32, out=chunk[lo:hi])


def _expected(
    pattern: int, chunk_number: int, lo: int, hi: int, device: torch.device
) -> torch.Tensor | int:
    if pattern != ADDRESS_PATTERN:
        return pattern_word(pattern)
    return torch.arange(lo + chunk_number, hi + chunk_number, dtype=torch.int32, device=device)


@dataclass(frozen=True, slots=True)
class CopyMeasurement:
    """Host-to-device copy bandwidth.

    Attributes:
        gbytes_per_s: ``nbytes / median_s / 1e9``.
        median_s: median time of one copy.
        nbytes: bytes per copy.
        pinned: whether the host buffer was page-locked (only with CUDA).
    """

    gbytes_per_s: float
    median_s: float
    nbytes: int
    pinned: bool


def measure_h2d(
    device: torch.device,
    *,
    nbytes: int,
    iterations: int,
    warmup: int,
    clock: Clock = time.perf_counter,
) -> CopyMeasurement:
    """Time copies of a (pinned, with CUDA) host buffer to ``device``; report the median."""
    pinned = device.type == "cuda"
    source = torch.ones(nbytes, dtype=torch.uint8, pin_memory=pinned)
    target = torch.empty(nbytes, dtype=torch.uint8, device=device)
    for _ in range(warmup):
        target.copy_(source, non_blocking=pinned)
    synchronize(device)
    times: list[float] = []
    for _ in range(iterations):
        synchronize(device)
        start = clock()
        target.copy_(source, non_blocking=pinned)
        synchronize(device)
        times.append(clock() - start)
    median = statistics.median(times)
    return CopyMeasurement(nbytes / median / 1e9, median, nbytes, pinned)


def bus_bandwidth_gbytes_per_s(nbytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """All-reduce algorithm and bus bandwidth in GB/s (nccl-tests' definitions).

    ``algbw = nbytes / seconds``; ``busbw = algbw * 2 (n - 1) / n``, the per-link traffic of a
    ring all-reduce, comparable across rank counts.
    """
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * 2.0 * (world_size - 1) / world_size


@dataclass(frozen=True, slots=True)
class AllReduceMeasurement:
    """All-reduce over the host's ranks.

    Attributes:
        world_size: ranks (one per GPU, or CPU processes with gloo).
        backend: ``nccl`` or ``gloo``.
        nbytes: bytes reduced per call.
        mean_s: mean time of one all-reduce.
        algbw_gbytes_per_s: algorithm bandwidth.
        busbw_gbytes_per_s: bus bandwidth.
        correct: whether a final all-reduce of known values gave the exact sum on rank 0.
    """

    world_size: int
    backend: str
    nbytes: int
    mean_s: float
    algbw_gbytes_per_s: float
    busbw_gbytes_per_s: float
    correct: bool


@dataclass(frozen=True, slots=True)
class _RankJob:
    world_size: int
    backend: str
    init_file: str
    nbytes: int
    iterations: int
    warmup: int


def measure_allreduce(
    *,
    world_size: int,
    backend: Literal["nccl", "gloo"],
    nbytes: int,
    iterations: int,
    warmup: int,
    timeout_s: float,
) -> AllReduceMeasurement:
    """Run an all-reduce benchmark with one spawned process per rank.

    With ``nccl`` rank ``r`` uses ``cuda:r``; with ``gloo`` every rank runs on the CPU. Ranks
    meet through a file in a fresh temporary directory (``file://`` init method).

    Raises:
        TimeoutError: the ranks did not finish within ``timeout_s`` (they are killed).
        RuntimeError: a rank failed or exited without reporting.
    """
    context = mp.get_context("spawn")
    reports: Any = context.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="firsthop-allreduce-") as tmp:
        job = _RankJob(world_size, backend, str(Path(tmp) / "init"), nbytes, iterations, warmup)
        ranks = [
            context.Process(target=_allreduce_rank, args=(rank, job, reports), daemon=True)
            for rank in range(world_size)
        ]
        for process in ranks:
            process.start()
        deadline = time.monotonic() + timeout_s
        for process in ranks:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [process for process in ranks if process.is_alive()]
        for process in stuck:
            process.kill()
            process.join()
    if stuck:
        raise TimeoutError(f"{len(stuck)} all-reduce ranks did not finish in {timeout_s:g} s")
    outcomes: list[tuple[int, str, float, bool]] = []
    while not reports.empty():
        outcomes.append(reports.get())
    errors = [f"rank {rank}: {message}" for rank, message, _, _ in outcomes if message]
    if errors:
        raise RuntimeError("; ".join(sorted(errors)))
    rank0 = [(mean_s, correct) for rank, _, mean_s, correct in outcomes if rank == 0]
    if not rank0:
        codes = [process.exitcode for process in ranks]
        raise RuntimeError(f"all-reduce rank 0 reported nothing (exit codes {codes})")
    mean_s, correct = rank0[0]
    algbw, busbw = bus_bandwidth_gbytes_per_s(nbytes, mean_s, world_size)
    return AllReduceMeasurement(world_size, backend, nbytes, mean_s, algbw, busbw, correct)


def _allreduce_rank(rank: int, job: _RankJob, reports: Any) -> None:
    """One rank of :func:`measure_allreduce` (runs in a spawned process).

    Puts ``(rank, error, mean_s, correct)`` on ``reports``: rank 0 its figures, any rank that
    fails its error message.
    """
    try:
        mean_s, correct = _allreduce_rank_body(rank, job)
    except Exception as exc:  # any failure of a rank is reported to the parent, then it exits
        reports.put((rank, f"{type(exc).__name__}: {exc}", 0.0, False))
        return
    if rank == 0:
        reports.put((rank, "", mean_s, correct))


def _allreduce_rank_body(rank: int, job: _RankJob) -> tuple[float, bool]:
    device = torch.device("cuda", rank) if job.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        job.backend, init_method=f"file://{job.init_file}", rank=rank, world_size=job.world_size
    )
    try:
        tensor = torch.ones(max(1, job.nbytes // 4), dtype=torch.float32, device=device)
        for _ in range(job.warmup):
            dist.all_reduce(tensor)
        synchronize(device)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(job.iterations):
            dist.all_reduce(tensor)
        synchronize(device)
        mean_s = (time.perf_counter() - start) / job.iterations
        tensor.fill_(float(rank + 1))
        dist.all_reduce(tensor)
        expected = job.world_size * (job.world_size + 1) / 2
        return mean_s, bool(torch.all(tensor == expected).item())
    finally:
        dist.destroy_process_group()
