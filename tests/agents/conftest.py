"""Fixtures of the agent tests: tests marked ``gpu`` skip on hosts without a CUDA device.

Applies to this directory only. The deep health check and the NVML probe need an NVIDIA GPU,
its driver and a CUDA build of torch; run them on a GPU host with ``pytest -m gpu tests/agents``.
"""

from __future__ import annotations

import importlib.util

import pytest

GPU_SKIP_REASON = (
    "needs an NVIDIA GPU with its driver and a CUDA build of torch; "
    "run `pytest -m gpu tests/agents` on a GPU host"
)


def cuda_available() -> bool:
    """Whether torch is installed with CUDA and sees at least one device."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@pytest.fixture(autouse=True)
def _skip_gpu_tests_without_gpu(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("gpu") is not None and not cuda_available():
        pytest.skip(GPU_SKIP_REASON)
