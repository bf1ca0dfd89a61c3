"""The asyncio runtime that owns the scheduling core (:mod:`scheduler.runtime.runtime`).

It serialises events into :meth:`Scheduler.handle <scheduler.core.scheduler.Scheduler.handle>`,
commits their changes to the store before answering, executes the actions (agent commands,
watch streams, metrics) and ticks the core with the real clock. :mod:`.fleet` and
:mod:`.agents` are the agent-facing half, :mod:`.watch` feeds ``WatchJob``, :mod:`.queries`
serves listings, :mod:`.metrics` holds the Prometheus metrics.

Must not import grpc, generated protos, ``scheduler.api`` or ``agents``.
"""
