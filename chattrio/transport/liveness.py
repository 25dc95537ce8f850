"""Server-side liveness: quiet sessions are pinged, dead ones are closed.

A client that vanishes without closing (a laptop lid, a dropped mobile link) would otherwise keep
its session, its buffer and its place in presence until TCP gives up, hours later. One task per
node walks the sessions in slices, so that each is visited once per ping interval and no timer is
armed per connection: at 20,000 sessions and 25 slots, a tick looks at about 800 of them.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from chattrio.transport.sessions import Session
from chattrio.transport.websocket import CLOSE_GOING_AWAY, ping_frame

# Slices of the session set; the sweep visits one per tick, the whole set once per ping interval.
LIVENESS_SLOTS = 25
PING_FRAME = ping_frame()
TIMEOUT_REASON = "no answer to ping"


class Liveness:
    """Pings every session quiet for `ping_interval` seconds and closes those quiet for
    `idle_timeout`. Any bytes from the client count as a sign of life, the pong included, so a
    busy client is never pinged. A dead session is noticed within one ping interval after its
    timeout."""

    def __init__(
        self,
        ping_interval: float,
        idle_timeout: float,
        on_timeout: Callable[[], object] | None = None,
        slots: int = LIVENESS_SLOTS,
    ) -> None:
        self._ping_interval = ping_interval
        self._idle_timeout = idle_timeout
        self._on_timeout = on_timeout
        self._slots: list[dict[Session, None]] = [{} for _ in range(slots)]
        self._hand = 0

    def watch(self, session: Session) -> None:
        self._slots[hash(session) % len(self._slots)][session] = None

    def forget(self, session: Session) -> None:
        self._slots[hash(session) % len(self._slots)].pop(session, None)

    def sweep(self, now: float) -> None:
        """Visit the next slice: ping the quiet sessions, close the silent ones."""
        slot = self._slots[self._hand]
        self._hand = (self._hand + 1) % len(self._slots)
        # Neither push() nor close() changes the slot: a session leaves it when its connection ends.
        for session in slot:
            if session.closing:
                continue
            quiet = now - session.last_received
            if quiet >= self._idle_timeout:
                if self._on_timeout is not None:
                    self._on_timeout()
                session.close(CLOSE_GOING_AWAY, TIMEOUT_REASON)
            elif quiet >= self._ping_interval:
                session.push(PING_FRAME)

    async def run(self) -> None:
        if self._ping_interval <= 0:
            return  # liveness is switched off
        tick = self._ping_interval / len(self._slots)
        next_tick = trio.current_time()
        while True:
            next_tick += tick
            await trio.sleep_until(next_tick)
            self.sweep(trio.current_time())
