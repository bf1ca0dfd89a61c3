"""``firsthop-sim``: a discrete-event simulator that drives the production scheduling core.

The simulator owns a simulated clock and plays the agents' part: it feeds the real
:class:`~scheduler.core.scheduler.Scheduler` the events a runtime would (submissions, ranks
started, checkpoints, rank exits, health verdicts, ticks) and executes the actions it returns
on simulated hosts. Placement is the real placer (``firsthop``) or a baseline policy plugged
into the core's placement seam (``slurm-tree``, ``kueue-tas``, ``first-fit``); queueing,
backfill, preemption and the failure path are the core's own in every run.

Modules: ``config`` (parameters), ``workload`` (traces and synthetic LLM jobs), ``failures``
(failure schedules), ``policies`` with ``baselines`` and ``costing`` (placement policies and
the placer's cost model applied to their rank tables), ``runmodel`` (run time from
communication cost, checkpoint cadence), ``engine`` (the event loop), ``simulate`` (a study:
every policy on the same arrivals and failures), ``metrics`` and ``report`` (results, plots),
``forecast`` (start-time estimates from a live state), ``cli`` (the console script).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents`` (an import-linter contract enforces it).
"""
