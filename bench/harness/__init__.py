"""The test and benchmark harness: real child processes, throwaway PostgreSQL and Slurm.

- :mod:`bench.harness.procs`: a child process whose stdout lines a thread collects (processes
  announce readiness on stdout, ``listening on``, ``agent H connected``...), and polling of a
  condition with a deadline. Tests and benchmarks never wait a fixed time.
- :mod:`bench.harness.slurm`: a throwaway single-host Slurm cluster (slurmctld and a slurmd per
  fake node) for the Slurm plug-in's tests and benchmark.
- :mod:`bench.harness.postgres`: ``initdb`` + ``postgres`` on a free port, for the store's
  contract tests and the benchmarks that measure PostgreSQL.

Never part of the product: not installed, and no production package may import it (an
import-linter contract). Tests and benches find it from the repository root.
"""
