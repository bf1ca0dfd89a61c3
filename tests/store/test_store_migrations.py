"""A scheduler killed in the middle of a schema migration starts fine the next time.

A forked child runs the migrations and SIGKILLs itself at step ``k`` (before the ``k``-th SQL
statement or commit the migrations send); the parent then opens the store as a restarted
scheduler would and checks it is at the newest revision with every column. This is done for
every ``k`` from the first statement to past the last, both for a new database and for an
upgrade from revision 0001. Each revision runs in one transaction, so a kill leaves the
database at the revision before or after it, never in between.

Forking (not a new interpreter per kill point) keeps the test fast; it is Linux-only like the
rest of the process tests.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.store import schema
from scheduler.store.sql import SqlStore, create_engine, migrate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (Linux)")


def _count_steps(run: Callable[[], None]) -> int:
    """How many statements and commits ``run`` sends."""
    steps = 0

    def count(*_args: Any) -> None:
        nonlocal steps
        steps += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    sa.event.listen(sa.engine.Engine, "commit", count)
    try:
        run()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
        sa.event.remove(sa.engine.Engine, "commit", count)
    return steps


def _run_killed_at(step: int, run: Callable[[], None]) -> int:
    """Run ``run`` in a forked child that SIGKILLs itself at ``step``; the wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            seen = 0

            def maybe_die(*_args: Any) -> None:
                nonlocal seen
                seen += 1
                if seen == step:
                    os.kill(os.getpid(), signal.SIGKILL)

            sa.event.listen(sa.engine.Engine, "before_cursor_execute", maybe_die)
            sa.event.listen(sa.engine.Engine, "commit", maybe_die)
            run()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def _columns(url: str) -> dict[str, set[str]]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = inspector.get_table_names()
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in tables}
    finally:
        engine.dispose()


def _expected_columns() -> dict[str, set[str]]:
    tables = schema.metadata.tables.values()
    return {table.name: {c.name for c in table.columns} for table in tables}


def _migrate_to(url: str, revision: str) -> Callable[[], None]:
    def run() -> None:
        engine = create_engine(url)
        try:
            migrate(engine, revision)
        finally:
            engine.dispose()

    return run


@pytest.mark.parametrize("start", ["empty", "0001"])
def test_a_kill_at_every_step_of_a_migration_then_a_start_works(tmp_path: Path, start: str) -> None:
    probe = f"sqlite:///{tmp_path / 'probe.db'}"
    if start != "empty":
        _migrate_to(probe, start)()
    steps = _count_steps(_migrate_to(probe, "head"))
    assert steps > 5

    killed = 0
    for step in range(1, steps + 2):
        url = f"sqlite:///{tmp_path / f'kill-{step}.db'}"
        if start != "empty":
            _migrate_to(url, start)()
        status = _run_killed_at(step, _migrate_to(url, "head"))
        killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        store = SqlStore(url)  # what a restarted scheduler does
        try:
            loaded = store.load()
        finally:
            store.close()
        columns = _columns(url)

        assert loaded.jobs == ()
        for table, names in _expected_columns().items():
            assert columns.get(table) == names, f"kill at step {step}: {table}"
    assert killed == steps  # every step was really interrupted (the last run was not)
