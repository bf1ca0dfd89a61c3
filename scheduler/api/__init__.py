"""The gRPC API of the scheduler: servicers that translate, serde, the error interceptor.

Servicers hold no business rules: they translate wire messages to records and events
(:mod:`scheduler.api.serde`), call the runtime, and translate the answer back. The
composition root that wires them to a store and a runtime is :mod:`scheduler.server`.

Must not import ``agents``, ``scheduler.store`` or ``placement``.
"""
