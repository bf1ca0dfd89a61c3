"""The gRPC API of the scheduler: servicers that translate, serde, the error interceptor, and
the composition root :func:`scheduler.api.server.build_server`.

Servicers hold no business rules: they translate wire messages to records and events
(:mod:`scheduler.api.serde`), call the runtime, and translate the answer back. Must not import
``agents``.
"""
