"""The agent side of AgentService without a network: heartbeats, backoff, commands, reports,
reconnection, and the executors. Time goes through injected wait functions; no test sleeps."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.launch import ProcessExecutor, rank_log_path
from agents.ranks import (
    RankControl,
    RankExit,
    RankKey,
    RankLaunch,
    SimulatedExecutor,
)
from agents.session import AgentSession, FatalAgentError, SessionOptions
from agents.timing import Backoff, heartbeat_loop
from agents.transport import SchedulerRejectedError, TransportError
from agents.wire import AgentIdentity
from firsthop.reasons import RankExitReason
from firsthop.v1 import agent_pb2

# ---------------------------------------------------------------- timing


class RecordingWait:
    """A wait function that returns at once, records delays, and stops after ``limit`` calls."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.delays: list[float] = []
        self.limit = limit

    async def __call__(self, stop: asyncio.Event, seconds: float) -> bool:
        self.delays.append(seconds)
        await asyncio.sleep(0)  # let other tasks run, as a real wait would
        if len(self.delays) > self.limit:
            stop.set()
        return stop.is_set()


async def test_heartbeats_are_jittered_and_stop_on_request() -> None:
    wait = RecordingWait(limit=50)
    sent: list[int] = []

    async def send() -> None:
        sent.append(len(sent))

    count = await heartbeat_loop(
        send, asyncio.Event(), interval_s=5.0, jitter=0.1, rng=random.Random(1), wait=wait
    )

    assert count == len(sent) == 50
    assert 0 <= wait.delays[0] <= 5.0
    assert all(4.5 <= d <= 5.5 for d in wait.delays[1:])
    assert len(set(wait.delays[1:])) > 40


async def test_a_failing_send_ends_the_heartbeat_loop() -> None:
    async def send() -> None:
        raise TransportError("broken")

    with pytest.raises(TransportError):
        await heartbeat_loop(send, asyncio.Event(), interval_s=1.0, wait=RecordingWait())


def test_backoff_grows_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(initial_s=0.1, max_s=2.0, rng=random.Random(0))
    delays = [backoff.next_delay() for _ in range(10)]
    backoff.reset()

    assert delays[0] <= 0.1
    assert all(d <= 2.0 for d in delays)
    assert max(delays[6:]) > 1.0
    assert backoff.next_delay() <= 0.1


# ---------------------------------------------------------------- a fake scheduler


class FakeStream:
    """One ``Connect`` stream: records what the agent writes; the test feeds what it reads."""

    def __init__(self) -> None:
        self.sent: list[agent_pb2.AgentMessage] = []
        self.inbox: asyncio.Queue[agent_pb2.SchedulerMessage | Exception | None] = asyncio.Queue()
        self.changed = asyncio.Event()
        self.closed = False

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        self.sent.append(message)
        self.changed.set()

    async def read(self) -> agent_pb2.SchedulerMessage | None:
        item = await self.inbox.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True

    def kinds(self) -> list[str]:
        return [m.WhichOneof("body") or "" for m in self.sent]

    async def wait_for(self, check: Callable[[FakeStream], bool]) -> None:
        while not check(self):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


class FakeTransport:
    """Registers every agent; hands out :class:`FakeStream` s; can refuse registrations."""

    def __init__(self) -> None:
        self.registrations: list[agent_pb2.RegisterNodeRequest] = []
        self.streams: list[FakeStream] = []
        self.refuse: SchedulerRejectedError | None = None
        self.opened = asyncio.Event()
        self.epoch = 0

    timeout_ms = 0
    """The heartbeat timeout announced at registration (0: none)."""
    fence_ms = 0
    """The fence time given at registration (0: no fencing)."""

    async def register(
        self, request: agent_pb2.RegisterNodeRequest
    ) -> agent_pb2.RegisterNodeResponse:
        if self.refuse is not None:
            raise self.refuse
        self.registrations.append(request)
        return agent_pb2.RegisterNodeResponse(
            session_id=f"s{len(self.registrations)}",
            heartbeat_interval_ms=60_000,
            heartbeat_timeout_ms=self.timeout_ms,
            epoch=self.epoch,
            fence_after_ms=self.fence_ms,
        )

    def connect(self) -> FakeStream:
        stream = FakeStream()
        self.streams.append(stream)
        self.opened.set()
        return stream

    async def next_stream(self, count: int) -> FakeStream:
        while len(self.streams) < count:
            self.opened.clear()
            await asyncio.wait_for(self.opened.wait(), 5)
        return self.streams[count - 1]


class HeldExecutor:
    """Ranks run until the test releases them with an exit."""

    def __init__(self) -> None:
        self.exits: dict[RankKey, asyncio.Future[RankExit]] = {}

    async def run(self, launch: RankLaunch, control: RankControl) -> RankExit:
        future = asyncio.get_running_loop().create_future()
        self.exits[launch.key] = future
        stop = asyncio.ensure_future(control.stop_requested.wait())
        done, _ = await asyncio.wait({future, stop}, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            stop.cancel()
            return future.result()
        return RankExit(None, signal.SIGTERM, RankExitReason.STOPPED)


IDENTITY = AgentIdentity(host="h0001", gpus=8, location=("leaf0", "pod0"), agent_instance="i1")


def _start(command_id: str, ranks: list[int], attempt: int = 0) -> agent_pb2.Command:
    return agent_pb2.Command(
        command_id=command_id,
        start_ranks=agent_pb2.StartRanks(
            job_id="j-1",
            attempt=attempt,
            argv=["train"],
            env={"A": "1"},
            ranks=[
                agent_pb2.RankLaunch(rank=r, local_rank=i, gpu=r, env={"RANK": str(r)})
                for i, r in enumerate(ranks)
            ],
        ),
    )


def _session(transport: FakeTransport, executor: HeldExecutor) -> AgentSession:
    options = SessionOptions(wait=RecordingWait(), rng=random.Random(0))
    return AgentSession(IDENTITY, transport, executor, options)


async def test_commands_apply_once_per_id_and_per_rank() -> None:
    executor = HeldExecutor()
    session = _session(FakeTransport(), executor)

    first = session.handle_command(_start("start:j-1:0:h0001", [0, 1]))
    resent = session.handle_command(_start("start:j-1:0:h0001", [0, 1]))
    same_ranks = session.handle_command(_start("other-id", [0, 1]))
    bad_gpu = session.handle_command(_start("bad", [9]))
    stop = session.handle_command(
        agent_pb2.Command(command_id="stop-1", stop_ranks=agent_pb2.StopRanks(job_id="j-1"))
    )
    await asyncio.sleep(0)  # let the rank tasks start and see the stop

    assert first.status == agent_pb2.COMMAND_STATUS_APPLIED
    assert resent.status == agent_pb2.COMMAND_STATUS_DUPLICATE
    assert same_ranks.status == agent_pb2.COMMAND_STATUS_DUPLICATE
    assert bad_gpu.status == agent_pb2.COMMAND_STATUS_REJECTED
    assert stop.status == agent_pb2.COMMAND_STATUS_APPLIED
    assert stop.message == "stopping 2 ranks"
    assert sorted(k.rank for k in executor.exits) == [0, 1]


async def test_reconnect_re_reports_running_ranks_and_resends_unacknowledged_reports() -> None:
    transport = FakeTransport()
    executor = HeldExecutor()
    session = _session(transport, executor)
    stop = asyncio.Event()
    runner = asyncio.create_task(session.run(stop))

    first = await transport.next_stream(1)
    await first.wait_for(lambda s: s.kinds()[:1] == ["hello"])
    first.inbox.put_nowait(agent_pb2.SchedulerMessage(command=_start("c1", [0, 1])))
    await first.wait_for(lambda s: "ack" in s.kinds() and "report" in s.kinds())
    started = next(m.report for m in first.sent if m.WhichOneof("body") == "report")
    first.inbox.put_nowait(
        agent_pb2.SchedulerMessage(report_ack=agent_pb2.ReportAck(report_id=started.report_id))
    )
    executor.exits[RankKey("j-1", 0, 1)].set_result(RankExit(0))
    await first.wait_for(lambda s: s.kinds().count("report") == 2)
    first.inbox.put_nowait(TransportError("connection reset"))

    second = await transport.next_stream(2)
    await second.wait_for(lambda s: len(s.sent) >= 2)
    stop.set()
    await asyncio.wait_for(runner, 5)

    hello = second.sent[0].hello
    resent = second.sent[1].report
    assert first.closed
    assert len(transport.registrations) == 1
    assert hello.session_id == "s1"
    assert [(r.job_id, list(r.ranks)) for r in hello.running] == [("j-1", [0])]
    assert resent.WhichOneof("body") == "rank_exited"
    assert resent.rank_exited.rank == 1
    assert resent.rank_exited.exit_code == 0
    assert session.unacknowledged_reports == 1


async def test_an_unknown_session_registers_again() -> None:
    transport = FakeTransport()
    session = _session(transport, HeldExecutor())
    stop = asyncio.Event()
    runner = asyncio.create_task(session.run(stop))

    first = await transport.next_stream(1)
    first.inbox.put_nowait(SchedulerRejectedError("restarted", reason="unknown_session"))
    second = await transport.next_stream(2)
    await second.wait_for(lambda s: len(s.sent) >= 1)
    stop.set()
    await asyncio.wait_for(runner, 5)

    assert len(transport.registrations) == 2
    assert second.sent[0].hello.session_id == "s2"
    assert list(transport.registrations[0].location) == ["leaf0", "pod0"]


class CountingBackoff(Backoff):
    """A backoff whose delays the test reads (``taken``)."""

    def __init__(self) -> None:
        super().__init__(initial_s=0.2, max_s=10.0, rng=random.Random(0))
        self.taken: list[float] = []

    def next_delay(self) -> float:
        delay = Backoff.next_delay(self)
        self.taken.append(delay)
        return delay


class ReconnectOnlyWait:
    """Returns at once from reconnection delays; other waits (heartbeats) last until stop."""

    def __init__(self, backoff: CountingBackoff) -> None:
        self._backoff = backoff
        self.delays: list[float] = []
        self.beats = False
        """Set to let heartbeats go out too (at once)."""

    async def __call__(self, stop: asyncio.Event, seconds: float) -> bool:
        if self._backoff.taken and seconds <= self._backoff.taken[-1]:
            self.delays.append(seconds)
            await asyncio.sleep(0)
            return stop.is_set()
        while not self.beats and not stop.is_set():
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)
        return stop.is_set()


def _session_with(
    transport: FakeTransport, backoff: CountingBackoff, *, heartbeats: bool = True
) -> AgentSession:
    wait = RecordingWait() if heartbeats else ReconnectOnlyWait(backoff)
    options = SessionOptions(wait=wait, rng=random.Random(0), backoff=backoff)
    return AgentSession(IDENTITY, transport, HeldExecutor(), options)


async def test_an_unknown_session_registers_again_without_waiting() -> None:
    transport = FakeTransport()
    backoff = CountingBackoff()
    session = _session_with(transport, backoff)
    stop = asyncio.Event()
    runner = asyncio.create_task(session.run(stop))

    first = await transport.next_stream(1)
    await first.wait_for(lambda s: s.kinds().count("heartbeat") >= 2)  # a working stream
    first.inbox.put_nowait(SchedulerRejectedError("restarted", reason="unknown_session"))
    second = await transport.next_stream(2)
    await second.wait_for(lambda s: len(s.sent) >= 1)
    stop.set()
    await asyncio.wait_for(runner, 5)

    assert len(transport.registrations) == 2
    assert backoff.taken == []  # no reconnection delay at all


async def test_an_unknown_session_right_after_registering_backs_off() -> None:
    transport = FakeTransport()
    backoff = CountingBackoff()
    session = _session_with(transport, backoff, heartbeats=False)
    stop = asyncio.Event()
    runner = asyncio.create_task(session.run(stop))

    for n in (1, 2, 3):
        stream = await transport.next_stream(n)
        stream.inbox.put_nowait(SchedulerRejectedError("unknown", reason="unknown_session"))
    await transport.next_stream(4)
    stop.set()
    await asyncio.wait_for(runner, 5)

    # A refusal of a session that never worked waits before registering again (no busy loop).
    assert len(transport.registrations) == 4
    assert len(backoff.taken) == 3


async def test_the_backoff_restarts_after_a_working_stream_and_stays_under_the_timeout() -> None:
    transport = FakeTransport()
    transport.timeout_ms = 5_000
    backoff = CountingBackoff()
    session = _session_with(transport, backoff, heartbeats=False)
    wait = session._opts.wait
    assert isinstance(wait, ReconnectOnlyWait)
    stop = asyncio.Event()
    runner = asyncio.create_task(session.run(stop))

    for n in range(1, 9):  # eight streams that break before carrying a heartbeat
        stream = await transport.next_stream(n)
        stream.inbox.put_nowait(TransportError("connection refused"))
    working = await transport.next_stream(9)
    grown = list(backoff.taken)
    wait.beats = True
    await working.wait_for(lambda s: s.kinds().count("heartbeat") >= 2)
    working.inbox.put_nowait(TransportError("the scheduler died"))
    await transport.next_stream(10)
    stop.set()
    await asyncio.wait_for(runner, 5)

    assert max(grown) > 1.0  # the raw backoff grew past a fifth of the 5 s timeout...
    assert len(wait.delays) == 9
    assert max(wait.delays) <= 1.0  # ...but no reconnection waited longer
    assert backoff.taken[-1] <= backoff.initial_s  # after a working stream: from the start


async def test_an_unknown_host_is_fatal() -> None:
    transport = FakeTransport()
    transport.refuse = SchedulerRejectedError("no such host", reason="unknown_node")
    session = _session(transport, HeldExecutor())

    with pytest.raises(FatalAgentError) as info:
        await asyncio.wait_for(session.run(asyncio.Event()), 5)

    assert info.value.reason == "unknown_node"


# ---------------------------------------------------------------- executors


def _launch(env: dict[str, str], rank: int = 0, argv: tuple[str, ...] = ("x",)) -> RankLaunch:
    return RankLaunch(RankKey("j-1", 0, rank), argv, env, gpu=rank, local_rank=rank)


async def test_simulated_ranks_run_their_duration_and_checkpoint() -> None:
    wait = RecordingWait()
    checkpoints: list[int] = []
    control = RankControl(checkpoint=lambda step, _path: checkpoints.append(step))
    env = {"FIRSTHOP_SIM_DURATION_S": "10", "FIRSTHOP_SIM_CHECKPOINT_S": "3"}

    result = await SimulatedExecutor(wait=wait).run(_launch(env), control)
    failed = await SimulatedExecutor(wait=wait).run(
        _launch({"FIRSTHOP_SIM_DURATION_S": "1", "FIRSTHOP_SIM_EXIT_CODE": "3"}),
        RankControl(checkpoint=lambda *_: None),
    )

    assert result == RankExit(0, None, "completed")
    assert checkpoints == [1, 2, 3]
    assert wait.delays[:4] == [3.0, 3.0, 3.0, 1.0]
    assert failed.exit_code == 3
    assert failed.reason == "failed"


async def test_a_stopped_simulated_rank_reports_stopped() -> None:
    control = RankControl(checkpoint=lambda *_: None)
    control.request_stop(5.0)

    result = await SimulatedExecutor(wait=RecordingWait()).run(_launch({}), control)

    assert result.reason == "stopped"
    assert result.signal == signal.SIGTERM


async def test_process_ranks_exit_with_their_status(tmp_path: Path) -> None:
    argv = (sys.executable, "-c", "import os, sys; sys.exit(int(os.environ['CODE']))")
    executor = ProcessExecutor(tmp_path)

    ok = await executor.run(_launch({"CODE": "0"}, argv=argv), RankControl(lambda *_: None))
    bad = await executor.run(_launch({"CODE": "4"}, 1, argv), RankControl(lambda *_: None))
    missing = await executor.run(
        _launch({}, 2, ("/nonexistent/bin",)), RankControl(lambda *_: None)
    )

    assert ok == RankExit(0, None, "completed")
    assert bad == RankExit(4, None, "failed")
    assert missing.reason == "start_failed"
    assert rank_log_path(tmp_path, "j-1", 0, 0).exists()


async def test_a_stopped_process_gets_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    control = RankControl(checkpoint=lambda *_: None)
    task = asyncio.create_task(
        ProcessExecutor(tmp_path).run(_launch({}, argv=(sys.executable, "-c", script)), control)
    )
    # The process announces itself through a file; poll the file system, not the clock.
    while not ready.exists():
        await asyncio.wait({task}, timeout=0.05)
    control.request_stop(10.0)
    result = await asyncio.wait_for(task, 10)

    assert result == RankExit(7, None, "stopped")


# ---------------------------------------------------------------- fencing epochs


async def test_commands_of_an_older_epoch_than_the_newest_seen_are_refused_unapplied() -> None:
    executor = HeldExecutor()
    session = _session(FakeTransport(), executor)

    start = _start("start:j-1:0:h0001", [0])
    start.epoch = 3
    applied = session.handle_command(start)
    await asyncio.sleep(0)  # let the rank task start
    stale_stop = agent_pb2.Command(
        command_id="stop-old", epoch=2, stop_ranks=agent_pb2.StopRanks(job_id="j-1")
    )
    refused = session.handle_command(stale_stop)
    stale_start = _start("start:j-2:0:h0001", [1])
    stale_start.epoch = 2
    refused_start = session.handle_command(stale_start)
    await asyncio.sleep(0)

    assert applied.status == agent_pb2.COMMAND_STATUS_APPLIED
    assert refused.status == agent_pb2.COMMAND_STATUS_REJECTED
    assert "stale epoch 2" in refused.message
    assert refused_start.status == agent_pb2.COMMAND_STATUS_REJECTED
    assert session.stale_commands == 2
    assert session.epoch == 3
    assert [k.rank for k in executor.exits] == [0]  # the stale start started nothing
    assert session.supervisor.running()  # and the stale stop stopped nothing


async def test_the_registration_epoch_fences_commands_before_any_arrives() -> None:
    transport = FakeTransport()
    session = _session(transport, HeldExecutor())
    transport.epoch = 7
    stop = asyncio.Event()
    task = asyncio.create_task(session.run(stop))
    await asyncio.wait_for(transport.opened.wait(), 5)
    stale = _start("start:j-1:0:h0001", [0])
    stale.epoch = 6
    ack = session.handle_command(stale)
    stop.set()
    await asyncio.wait_for(task, 5)

    assert session.epoch == 7
    assert ack.status == agent_pb2.COMMAND_STATUS_REJECTED


async def test_a_connected_agent_checks_its_fence_each_quarter_fence_time_not_each_second() -> None:
    transport = FakeTransport()
    transport.timeout_ms, transport.fence_ms = 30_000, 25_000
    wait = RecordingWait(limit=60)
    session = AgentSession(
        IDENTITY, transport, HeldExecutor(), SessionOptions(wait=wait, rng=random.Random(0))
    )
    await asyncio.wait_for(session.run(asyncio.Event()), 5)  # the wait stops it after 60 calls

    # Heartbeats wait about 60 s (the fake's interval); the fence loop's waits are the short
    # ones. Just registered, the fence time runs out in 25 s: look again in a quarter of it
    # (a shorter fence from a later registration applies soon), not every second: thousands
    # of simulated agents in one process spent a quarter of their CPU on those checks.
    fence_checks = [d for d in wait.delays if d < 10.0]
    assert len(fence_checks) > 10
    assert all(6.0 < d <= 25.0 / 4 + 0.01 for d in fence_checks), fence_checks
