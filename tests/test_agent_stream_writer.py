"""The writer of an agent's ``Connect`` stream (:class:`scheduler.api.agent_servicer.
AgentServicer`): keep-alives every interval without giving up the pending read of the
host's outbox, and nothing left pending when the stream ends."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine, Generator
from types import SimpleNamespace
from typing import Any, cast

from scheduler.api.agent_servicer import AgentServicer
from scheduler.runtime.agents import AgentLink, ReportAcked
from scheduler.runtime.fleet import Fleet
from scheduler.runtime.runtime import Runtime


def _servicer(interval_s: float) -> AgentServicer:
    runtime = SimpleNamespace(agents=SimpleNamespace(epoch=3, closing=False))
    return AgentServicer(
        cast(Runtime, runtime),
        cast(Fleet, None),
        heartbeat_interval_s=interval_s,
        heartbeat_timeout_s=30 * interval_s,
    )


async def test_keep_alives_keep_one_pending_read_of_the_outbox_and_end_without_leftovers() -> None:
    created: Counter[str] = Counter()

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]
    ) -> asyncio.Task[Any]:
        created[getattr(coro, "__qualname__", "")] += 1
        return asyncio.Task(coro, loop=loop)

    loop = asyncio.get_running_loop()
    link = AgentLink("h0001", "s1")
    reader = asyncio.ensure_future(loop.create_future())  # the agent says nothing
    writer = _servicer(0.01)._write(link, reader)
    loop.set_task_factory(factory)
    try:
        kinds = [(await anext(writer)).WhichOneof("body") for _ in range(10)]
        link.outbox.put_nowait(ReportAcked("r-1"))
        message = await anext(writer)
        while message.WhichOneof("body") == "keep_alive":
            message = await anext(writer)
        await writer.aclose()
    finally:
        loop.set_task_factory(None)
        reader.cancel()

    assert kinds == ["keep_alive"] * 10
    assert message.WhichOneof("body") == "report_ack"
    assert message.report_ack.report_id == "r-1"
    # One read of the outbox across all the keep-alives (and one after the item), not one
    # per keep-alive: 8,192 agents' streams made those tasks by the thousand each second.
    assert created["Queue.get"] <= 2
    await asyncio.sleep(0)  # let the cancellations run
    left = [t for t in asyncio.all_tasks() if "Queue.get" in repr(t.get_coro())]
    assert left == []
