"""The scheduling core: a sans-IO state machine, ``handle(event) -> list[Action]``.

Jobs, nodes and queues are plain records; their lifecycles are transition tables; time enters
only as an event field or an injected clock. The server runtime, the discrete-event simulator
and the tests drive the same core.

Modules: ``scheduler`` (the ``Scheduler``), ``events`` and ``actions`` (its vocabulary),
``state`` (``SchedulerState`` and ``validate``), ``jobs`` and ``nodes`` (lifecycle handlers),
``cycle`` (the scheduling cycle) with ``queueing``, ``capacity``, ``backfill`` and
``preemption`` (policies), ``explain`` and ``status`` (queries for the API), ``records``,
``states``, ``errors``, ``config`` and ``clock``.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""
