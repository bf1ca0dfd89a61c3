"""Durable storage of the scheduler's records: a protocol, an in-memory and a SQL store.

- :mod:`scheduler.store.protocol`: the ``Store`` protocol and its errors;
- :mod:`scheduler.store.memory`: ``MemoryStore`` (tests, simulator, benchmark baseline);
- :mod:`scheduler.store.sql`: ``SqlStore`` on SQLite or PostgreSQL (SQLAlchemy Core) with
  Alembic migrations in :mod:`scheduler.store.migrations`;
- :mod:`scheduler.store.serde`: records <-> rows; :mod:`scheduler.store.schema`: the tables.

The throwaway PostgreSQL server of tests and benchmarks is :mod:`bench.harness.postgres`.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""
