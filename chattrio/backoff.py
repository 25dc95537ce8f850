"""Capped exponential backoff with jitter, for every loop that retries a backing service."""

from __future__ import annotations

import random

import trio


class Backoff:
    """`sleep()` waits the current delay, give or take half (so nodes that failed together do
    not retry together), then doubles it up to `cap`; `reset()` after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = cap
        self.delay = first

    async def sleep(self) -> None:
        await trio.sleep(self.delay * random.uniform(0.5, 1.5))
        self.delay = min(self.delay * 2, self._cap)

    def reset(self) -> None:
        self.delay = self._first
