"""One task per worker that decides when each user sends.

A sleeping task per user cost a timer, two cancel scopes and a task switch per message. Here a
heap of due times is served by one task: at each wake-up every user that is due sends, normally
with one non-blocking system call (`SimUser.send_next`). Wake-ups are on a grid of `TICK`
seconds, so that one serves several users.

The rate semantics are those of the per-user loop it replaces: a random phase per user within
the first interval, no sends from `end` on, and after a stall (a busy event loop, or a write that
had to wait for the kernel) the next turn is `max(due + interval, now)`, so missed turns are
skipped rather than sent in a burst.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import trio

# A turn is served at the first multiple of TICK (trio clock) at or after it. With random phases
# most wake-ups would otherwise serve a single user, and a wake-up costs more than a send.
# Latencies are unaffected: a message's send time is taken when it is actually sent.
TICK = 0.005

# What a sender returns when its write could not complete at once: awaiting it finishes the write.
FinishWrite = Callable[[], Awaitable[None]]


class Sender(Protocol):
    def send_next(self) -> FinishWrite | None:
        """Send the next message now. None when it is written (or kept for later, e.g. while
        reconnecting); otherwise the clock awaits the returned function, in its own task, before
        this sender's next turn is scheduled."""


class _Turn:
    __slots__ = ("sender", "active")

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.active = True  # false once the sender leaves; its heap entry is then skipped


class SendClock:
    def __init__(self, rate: float, start: float, end: float) -> None:
        """`rate` sends per second per sender (0: nobody sends), between `start` and `end` on
        trio's clock."""
        self._interval = 1.0 / rate if rate > 0 else math.inf
        self._start = start
        self._end = end
        self._heap: list[tuple[float, int, _Turn]] = []
        self._order = itertools.count()  # ties in due time are served first come, first served
        self._sleep: trio.CancelScope | None = None
        self._writes: trio.Nursery | None = None

    @contextmanager
    def schedule(self, sender: Sender) -> Iterator[None]:
        """Inside this block the sender gets its turns."""
        if self._interval == math.inf:
            yield
            return
        turn = _Turn(sender)
        # A random phase spreads the senders over the interval instead of in bursts.
        self._push(turn, max(self._start + random.random() * self._interval, trio.current_time()))
        try:
            yield
        finally:
            turn.active = False

    def _push(self, turn: _Turn, due: float) -> None:
        if due >= self._end or not turn.active:
            return
        heapq.heappush(self._heap, (due, next(self._order), turn))
        if self._sleep is not None:
            self._sleep.deadline = min(self._sleep.deadline, self._wake_up_time())

    def _wake_up_time(self) -> float:
        if not self._heap:
            return math.inf
        due = self._heap[0][0]
        return max(due, math.ceil(due / TICK) * TICK)  # max: never before `due` by a rounding error

    async def run(self) -> None:
        async with trio.open_nursery() as self._writes:
            while True:
                with trio.CancelScope(deadline=self._wake_up_time()) as self._sleep:
                    await trio.sleep_forever()
                self._sleep = None
                self._serve(trio.current_time())

    def _serve(self, now: float) -> None:
        heap = self._heap
        interval = self._interval
        while heap and heap[0][0] <= now:
            due, _, turn = heapq.heappop(heap)
            if not turn.active:
                continue
            finish = turn.sender.send_next()
            if finish is None:
                self._push(turn, max(due + interval, now))
            else:
                assert self._writes is not None
                self._writes.start_soon(self._after_write, turn, due, finish)

    async def _after_write(self, turn: _Turn, due: float, finish: FinishWrite) -> None:
        await finish()
        self._push(turn, max(due + self._interval, trio.current_time()))
