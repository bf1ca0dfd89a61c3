"""The Slurm plug-in: firsthop's rank placement and health gates inside a Slurm cluster.

Slurm chooses the nodes (with the ``topology.conf`` firsthop exports); the hooks decide which
rank runs on which GPU of those nodes and keep broken nodes out:

- :mod:`agents.slurm.cli`: ``firsthop-slurm prolog-ctld|prolog|task-prolog|epilog|epilog-ctld``,
  the programs Slurm runs (through the wrappers :mod:`agents.slurm.install` writes);
- :mod:`agents.slurm.ctld`: the rank table of an allocation (the placement engine restricted to
  the allocated hosts);
- :mod:`agents.slurm.hooks`: what each hook does, with explicit exit codes;
- :mod:`agents.slurm.state`, :mod:`agents.slurm.taskprolog`: the published table, per-host
  slices and the TaskProlog's ``export`` lines (standard library only: it runs once per task);
- :mod:`agents.slurm.health`: the Prolog's fast health check (the agents' probes and verdict);
- :mod:`agents.slurm.status`: ``firsthopctl slurm status`` from ``sinfo``/``squeue``.

This package's ``__init__`` imports nothing: the TaskProlog's import chain must stay in the
standard library. Must not import ``scheduler``.
"""
