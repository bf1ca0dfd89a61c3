"""The deep health check: its arithmetic, the pattern compare (with injected corruption), the
judgement, the CPU path end to end, the no-GPU exit codes, the report's JSON, and (marked
``gpu``) the real check on a GPU host."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import torch

from agents.health import benchmarks as bench
from agents.health.deepcheck import (
    EXIT_FAILED,
    EXIT_NO_GPU,
    EXIT_OK,
    CheckName,
    DeepCheckConfig,
    DeepCheckReport,
    Outcome,
    check_command,
    format_report,
    judge,
    run_deep_check,
)
from agents.health.reference import reference_for

TINY = DeepCheckConfig(
    device="cpu",
    matmul_size=32,
    matmul_iterations=2,
    matmul_warmup=1,
    accuracy_size=64,
    memory_max_bytes=64 * 1024,
    memory_chunk_bytes=16 * 1024,
    h2d_bytes=64 * 1024,
    h2d_iterations=2,
    h2d_warmup=1,
    allreduce_bytes=4096,
    allreduce_iterations=2,
    allreduce_warmup=1,
    allreduce_timeout_s=120,
    checks=frozenset(CheckName) - {CheckName.ALLREDUCE},
)
NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="this host has a CUDA device: the no-GPU path is tested on CPU-only hosts",
)


def ticks(*values: float) -> Iterator[float]:
    return iter(values)


def by_name(report: DeepCheckReport) -> dict[CheckName, Outcome]:
    return {r.name: r.outcome for r in report.results}


# -- arithmetic ------------------------------------------------------------------------------


def test_matmul_tflops_counts_two_n_cubed_flops() -> None:
    # The reference: 8192^3 in 1.439 ms is about 764 TFLOP/s.
    assert bench.matmul_tflops(8192, 1.439e-3) == pytest.approx(764.1, rel=1e-3)


@pytest.mark.parametrize(("world", "factor"), [(2, 1.0), (4, 1.5), (8, 1.75)])
def test_bus_bandwidth_is_algbw_times_two_n_minus_one_over_n(world: int, factor: float) -> None:
    algbw, busbw = bench.bus_bandwidth_gbytes_per_s(nbytes=10**9, seconds=0.01, world_size=world)

    assert algbw == pytest.approx(100.0)
    assert busbw == pytest.approx(100.0 * factor)


@pytest.mark.parametrize(
    ("pattern", "word"),
    [(0x0, 0), (0xFFFFFFFF, -1), (0xAAAAAAAA, -1431655766), (0x55555555, 0x55555555)],
)
def test_patterns_become_signed_int32_words(pattern: int, word: int) -> None:
    assert bench.pattern_word(pattern) == word


def test_judge_compares_on_the_right_side() -> None:
    assert judge(10.0, 8.0) is Outcome.PASS
    assert judge(7.9, 8.0) is Outcome.FAIL
    assert judge(0.0, 0.0, higher_is_better=False) is Outcome.PASS
    assert judge(1.0, 0.0, higher_is_better=False) is Outcome.FAIL
    assert judge(5.0, None) is Outcome.UNJUDGED


def test_reference_table_resolves_the_measured_h100() -> None:
    reference = reference_for("NVIDIA H100 80GB HBM3")

    assert reference is not None
    assert (reference.matmul_bf16_tflops, reference.h2d_pinned_gbytes_per_s) == (764.0, 55.0)
    assert reference_for("NVIDIA H100 PCIe") is None


# -- memory pattern test ----------------------------------------------------------------------


def chunks(words: int = 4096, count: int = 3) -> list[torch.Tensor]:
    return bench.allocate_chunks(torch.device("cpu"), words * 4 * count, words * 4)


def test_clean_memory_has_no_mismatches_and_throughput_follows_the_clock() -> None:
    memory = chunks()
    patterns = (0x0, 0xFFFFFFFF, bench.ADDRESS_PATTERN)
    clock = ticks(10.0, 12.0)

    m = bench.pattern_test(memory, patterns, slice_words=1000, clock=lambda: next(clock))

    assert (m.mismatches, m.first_mismatches) == (0, ())
    assert (m.bytes_tested, m.chunks, m.patterns) == (3 * 4096 * 4, 3, 3)
    assert m.elapsed_s == 2.0
    assert m.gbytes_per_s == pytest.approx(2 * 3 * 4096 * 4 * 3 / 2.0 / 1e9)


def test_a_flipped_bit_is_found_and_located() -> None:
    def flip(pattern: int, chunk: int, tensor: torch.Tensor) -> None:
        if (pattern, chunk) == (2, 1):
            tensor[1234] ^= 1 << 7

    m = bench.pattern_test(chunks(), (0x0, 0xFFFFFFFF, 0xAAAAAAAA), fault_hook=flip)

    assert m.mismatches == 1
    assert m.first_mismatches == ("pattern 2 chunk 1 word 1234",)


def test_address_pattern_catches_swapped_words_across_slices() -> None:
    def swap(pattern: int, chunk: int, tensor: torch.Tensor) -> None:
        if chunk == 2:
            tensor[[10, 3000]] = tensor[[3000, 10]]

    m = bench.pattern_test(chunks(), (bench.ADDRESS_PATTERN,), slice_words=1024, fault_hook=swap)

    assert m.mismatches == 2
    assert m.first_mismatches == ("pattern 0 chunk 2 word 10", "pattern 0 chunk 2 word 3000")


def test_constant_pattern_cannot_see_a_swap_but_the_address_pattern_can() -> None:
    def swap(pattern: int, chunk: int, tensor: torch.Tensor) -> None:
        tensor[[0, 1]] = tensor[[1, 0]]

    constant = bench.pattern_test(chunks(), (0xAAAAAAAA,), fault_hook=swap)
    address = bench.pattern_test(chunks(), (bench.ADDRESS_PATTERN,), fault_hook=swap)

    assert (constant.mismatches, address.mismatches) == (0, 2 * 3)


def test_allocation_stops_at_the_target() -> None:
    memory = bench.allocate_chunks(torch.device("cpu"), target_bytes=10_000, chunk_bytes=4096)

    assert [c.numel() for c in memory] == [1024, 1024, 452]
    with pytest.raises(ValueError, match="no memory"):
        bench.pattern_test([], (0x0,))


# -- the whole check on CPU -------------------------------------------------------------------


def test_cpu_check_runs_every_per_device_check() -> None:
    report = run_deep_check(TINY)

    assert report.device == "cpu"
    assert report.skipped_reason is None
    assert by_name(report) == {
        CheckName.MATMUL: Outcome.UNJUDGED,  # no reference figure for "cpu"
        CheckName.ACCURACY: Outcome.PASS,
        CheckName.MEMORY: Outcome.PASS,
        CheckName.H2D: Outcome.UNJUDGED,
    }
    assert report.passed
    assert report.exit_code(require_gpu=False) == EXIT_OK
    memory = next(r for r in report.results if r.name is CheckName.MEMORY)
    assert memory.details["bytes_tested"] == 64 * 1024
    assert memory.details["patterns"] == 5


def test_corrupted_pattern_fails_the_check_with_exit_code_one() -> None:
    def corrupt(pattern: int, chunk: int, tensor: torch.Tensor) -> None:
        if pattern == 3:
            tensor[7] = 0

    report = run_deep_check(TINY, fault_hook=corrupt)
    memory = next(r for r in report.results if r.name is CheckName.MEMORY)

    assert memory.outcome is Outcome.FAIL
    assert memory.measured == 4.0  # word 7 of each of the four chunks
    assert memory.details["first_mismatches"] == (
        "pattern 3 chunk 0 word 7; pattern 3 chunk 1 word 7; "
        "pattern 3 chunk 2 word 7; pattern 3 chunk 3 word 7"
    )
    assert not report.passed
    assert report.exit_code(require_gpu=False) == EXIT_FAILED
    assert "FAILED" in format_report(report)


def test_a_check_that_raises_fails_with_the_error() -> None:
    def device_error(pattern: int, chunk: int, tensor: torch.Tensor) -> None:
        raise RuntimeError("CUDA error: uncorrectable ECC error encountered")

    report = run_deep_check(TINY, fault_hook=device_error)
    memory = next(r for r in report.results if r.name is CheckName.MEMORY)

    assert (memory.outcome, memory.measured) == (Outcome.FAIL, None)
    assert memory.details["error"] == (
        "RuntimeError: CUDA error: uncorrectable ECC error encountered"
    )
    assert by_name(report)[CheckName.H2D] is Outcome.UNJUDGED  # later checks still ran


@pytest.mark.parametrize(
    ("expected", "outcome"), [(1e-9, Outcome.PASS), (1e9, Outcome.FAIL), (None, Outcome.UNJUDGED)]
)
def test_matmul_and_h2d_are_judged_against_expected_figures(
    expected: float | None, outcome: Outcome
) -> None:
    config = TINY.model_copy(
        update={
            "matmul_expected_tflops": expected,
            "h2d_expected_gbytes_per_s": expected,
            "checks": frozenset({CheckName.MATMUL, CheckName.H2D}),
        }
    )

    report = run_deep_check(config)

    assert by_name(report) == {CheckName.MATMUL: outcome, CheckName.H2D: outcome}
    matmul = report.results[0]
    assert matmul.threshold == (None if expected is None else expected * 0.85)
    assert matmul.measured is not None
    assert matmul.measured > 0


def test_accuracy_threshold_is_an_upper_bound() -> None:
    config = TINY.model_copy(
        update={"accuracy_max_relative_error": 1e-9, "checks": frozenset({CheckName.ACCURACY})}
    )

    (result,) = run_deep_check(config).results

    assert result.outcome is Outcome.FAIL
    assert result.measured is not None
    assert 1e-4 < result.measured < 1e-2  # bf16 rounding, as on the reference H100 (1.65e-3)


def test_memory_throughput_floor_is_optional() -> None:
    config = TINY.model_copy(
        update={"memory_min_gbytes_per_s": 1e9, "checks": frozenset({CheckName.MEMORY})}
    )

    (result,) = run_deep_check(config).results

    assert result.outcome is Outcome.FAIL
    assert result.measured == 0.0


def test_allreduce_with_one_rank_is_skipped_with_a_reason() -> None:
    config = TINY.model_copy(
        update={"allreduce_world_size": 1, "checks": frozenset({CheckName.ALLREDUCE})}
    )

    (result,) = run_deep_check(config).results

    assert result.outcome is Outcome.SKIPPED
    assert result.details["reason"] == "1 GPU: no peer to all-reduce with"


@pytest.mark.slow
def test_allreduce_over_gloo_ranks_measures_bus_bandwidth() -> None:
    config = TINY.model_copy(
        update={
            "checks": frozenset({CheckName.ALLREDUCE}),
            "allreduce_min_busbw_gbytes_per_s": 1e-9,
        }
    )

    (result,) = run_deep_check(config).results

    assert result.outcome is Outcome.PASS, result.details
    assert result.details["sum_correct"] is True
    assert result.details["world_size"] == 2
    assert result.measured == pytest.approx(result.details["algbw_gbytes_per_s"])  # 2(n-1)/n = 1


def test_report_round_trips_through_json() -> None:
    report = run_deep_check(TINY)

    text = report.model_dump_json()

    assert DeepCheckReport.model_validate_json(text) == report
    assert json.loads(text)["results"][0]["name"] == "matmul_throughput"


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        DeepCheckConfig.model_validate({"matmul_sizes": 8})


# -- no GPU -----------------------------------------------------------------------------------


@NO_CUDA
def test_without_cuda_the_check_is_skipped_and_exits_zero() -> None:
    out = io.StringIO()

    code = check_command(DeepCheckConfig(), out=out)

    assert code == EXIT_OK
    assert out.getvalue() == "deep health check skipped: no CUDA device\n"


@NO_CUDA
def test_without_cuda_require_gpu_exits_two_and_json_says_why() -> None:
    out = io.StringIO()

    code = check_command(DeepCheckConfig(require_gpu=True), output="json", out=out)

    assert code == EXIT_NO_GPU
    assert json.loads(out.getvalue())["skipped_reason"] == "no CUDA device"


def test_check_command_prints_a_table_for_the_cpu_path() -> None:
    out = io.StringIO()

    code = check_command(TINY, out=out)

    assert code == EXIT_OK
    text = out.getvalue()
    assert "memory_pattern" in text
    assert "<= 0" in text
    assert text.endswith("PASSED\n")


# -- on a GPU host -----------------------------------------------------------------------------


@pytest.mark.gpu
def test_real_deep_check_passes_on_this_gpu_host() -> None:
    report = run_deep_check(DeepCheckConfig(require_gpu=True))

    print(format_report(report))
    print(report.model_dump_json(indent=2))
    assert report.skipped_reason is None
    assert report.devices
    assert report.passed, [r for r in report.results if r.outcome is Outcome.FAIL]


@pytest.mark.gpu
def test_real_memory_pattern_test_sees_injected_corruption_on_the_gpu() -> None:
    def corrupt(pattern: int, chunk: int, tensor: torch.Tensor) -> None:
        if (pattern, chunk) == (1, 0):
            tensor[123] = 0

    config = DeepCheckConfig(
        checks=frozenset({CheckName.MEMORY}), gpu_indices=(0,), memory_max_bytes=2**30
    )

    (result,) = run_deep_check(config, fault_hook=corrupt).results

    assert (result.outcome, result.measured) == (Outcome.FAIL, 1.0)
