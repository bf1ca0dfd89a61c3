"""Reference figures of known GPUs, the defaults of the deep health check's thresholds.

Only figures measured on real hardware belong here, each with its source; a GPU without an
entry is still checked (mismatches, failures) but its throughput results are reported without
a pass/fail judgement until a figure is configured or added here.

Must not import ``scheduler``, torch or pynvml.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuReference:
    """Measured figures of one GPU model.

    Attributes:
        name_contains: matched against the device name (case-insensitive substring).
        matmul_bf16_tflops: measured dense bf16 matmul throughput (8192^3, median of 20).
        datasheet_bf16_tflops: the datasheet's dense bf16 figure, for context only.
        h2d_pinned_gbytes_per_s: measured host-to-device copy bandwidth from pinned memory (1 GiB).
        hbm_copy_gbytes_per_s: measured device-to-device copy bandwidth (read + write, 4 GiB).
        source: where the figures come from.
    """

    name_contains: str
    matmul_bf16_tflops: float
    datasheet_bf16_tflops: float | None
    h2d_pinned_gbytes_per_s: float | None
    hbm_copy_gbytes_per_s: float | None
    source: str


REFERENCES: tuple[GpuReference, ...] = (
    GpuReference(
        name_contains="H100 80GB HBM3",
        matmul_bf16_tflops=764.0,
        datasheet_bf16_tflops=989.0,
        h2d_pinned_gbytes_per_s=55.0,
        hbm_copy_gbytes_per_s=3020.0,
        source=(
            "shared/data/gpu/README.md: one H100 80GB HBM3 (SXM, 132 SMs), driver 580.159.04, "
            "CUDA 13.0, torch 2.11.0+cu130, PCIe Gen5 x16"
        ),
    ),
)


def reference_for(device_name: str) -> GpuReference | None:
    """The reference entry whose pattern the device name contains, or ``None``."""
    lowered = device_name.lower()
    for entry in REFERENCES:
        if entry.name_contains.lower() in lowered:
            return entry
    return None
