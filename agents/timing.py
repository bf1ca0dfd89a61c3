"""Time for agents, injectable: waiting with a stop event, jitter, backoff, the heartbeat loop.

Every delay an agent takes goes through a :data:`WaitFn` (``await wait(stop, seconds)``,
true when ``stop`` was set first), so tests inject one that records the delays and returns at
once instead of sleeping. Jitter takes an injected ``random.Random``.

Must not import ``scheduler`` or the generated protos.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

WaitFn = Callable[[asyncio.Event, float], Awaitable[bool]]
"""``await wait(stop, seconds)``: wait that long or until ``stop`` is set; true if stopped."""


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """The real :data:`WaitFn`: the event loop's timer."""
    if stop.is_set():
        return True
    # ``asyncio.timeout`` around the wait itself, not ``wait_for``: no task per wait, which
    # matters with thousands of simulated agents (heartbeats, fence checks) in one loop.
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await stop.wait()
    except TimeoutError:
        return stop.is_set()
    return True


def jittered(interval_s: float, fraction: float, rng: random.Random) -> float:
    """``interval_s`` spread uniformly by ``±fraction`` (agents must not beat in step)."""
    return interval_s * (1.0 + fraction * (2.0 * rng.random() - 1.0))


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter between ``initial_s`` and ``max_s``."""

    initial_s: float = 0.2
    max_s: float = 10.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (grows until :meth:`reset`)."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier**self._attempt)
        self._attempt += 1
        return ceiling * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a success)."""
        self._attempt = 0


async def heartbeat_loop(
    send: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    interval_s: float,
    jitter: float = 0.1,
    rng: random.Random | None = None,
    wait: WaitFn = wait_or_stop,
    first_delay_s: float | None = None,
) -> int:
    """Call ``send`` about every ``interval_s`` seconds until ``stop`` is set.

    Args:
        send: Sends one heartbeat; an exception from it ends the loop (the stream broke).
        stop: Ends the loop when set.
        interval_s: Mean period.
        jitter: Each period is spread by ``±jitter`` of ``interval_s``.
        rng: Randomness for the jitter (seed it in tests).
        wait: The wait function (inject one in tests).
        first_delay_s: Delay before the first heartbeat; default a random fraction of one
            period, so agents that start together spread out.

    Returns:
        The number of heartbeats sent.
    """
    rng = rng or random.Random()
    delay = rng.random() * interval_s if first_delay_s is None else first_delay_s
    sent = 0
    while not await wait(stop, delay):
        await send()
        sent += 1
        delay = jittered(interval_s, jitter, rng)
    return sent
