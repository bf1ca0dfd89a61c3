"""Host-side health of a firsthop node: probes, the health verdict and the deep health check.

- :mod:`agents.health.probe`: the :class:`~agents.health.probe.GpuProbe` and
  :class:`~agents.health.probe.HostProbe` protocols and their frozen reading types.
- :mod:`agents.health.nvml`: the NVML (nvidia-ml-py) GPU probe.
- :mod:`agents.health.host`: the Linux host probe (checkpoint disk, memory, load).
- :mod:`agents.health.fake`: a scriptable fake GPU/host probe for tests and ``--fake-gpus`` demos.
- :mod:`agents.health.verdict`: the pure function turning readings into HEALTHY/SUSPECT/FAILED.
- :mod:`agents.health.deepcheck`: matmul, HBM pattern, host-to-device and all-reduce checks
  (imports torch: import it lazily, only where a deep check runs).

Must not import ``scheduler`` (enforced by import-linter): agents reach the scheduler only over
gRPC, and the scheduler maps the health words through its own table.
"""
