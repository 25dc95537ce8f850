"""Session deadlines: a session is closed (4001) when the token it was opened with expires, and
one opened without a token (1008) when no AUTH came in time.

One task per node sleeps until the earliest deadline, instead of a cancel scope or a task per
session: an idle session then costs a heap entry, not a scope with its status and sets
(docs/decisions/session-memory.md). A session that ends leaves its entry behind; the heap is
rebuilt from the live sessions once the dead entries outnumber them.
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio

from chattrio.transport.sessions import Session
from chattrio.transport.websocket import CLOSE_TOKEN_EXPIRED

# Dead entries tolerated beyond the live ones before the heap is rebuilt.
COMPACT_SLACK = 1024
EXPIRED_REASON = "token expired"


class SessionDeadlines:
    def __init__(self) -> None:
        # session -> when (trio's clock) it is closed, with which code and reason
        self._deadlines: dict[Session, tuple[float, int, str]] = {}
        self._heap: list[tuple[float, int, Session]] = []
        self._order = itertools.count()  # ties: no comparison of sessions
        self._wait: trio.CancelScope | None = None

    def watch(
        self, session: Session, deadline: float, code: int = CLOSE_TOKEN_EXPIRED, reason: str = EXPIRED_REASON
    ) -> None:
        """Close the session at `deadline` (trio's clock); a later call replaces it (AUTH)."""
        self._deadlines[session] = (deadline, code, reason)
        heapq.heappush(self._heap, (deadline, next(self._order), session))
        if self._wait is not None and deadline < self._wait.deadline:
            self._wait.deadline = deadline
        if len(self._heap) > 2 * len(self._deadlines) + COMPACT_SLACK:
            self._heap = [(d, next(self._order), s) for s, (d, _, _) in self._deadlines.items()]
            heapq.heapify(self._heap)

    def forget(self, session: Session) -> None:
        self._deadlines.pop(session, None)

    def expire(self, now: float) -> None:
        """Close the sessions whose deadline is `now` or earlier."""
        while self._heap and self._heap[0][0] <= now:
            deadline, _, session = heapq.heappop(self._heap)
            entry = self._deadlines.get(session)
            if entry is not None and entry[0] == deadline:  # else ended, or moved by AUTH
                del self._deadlines[session]
                session.close(entry[1], entry[2])

    async def run(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf) as self._wait:
                await trio.sleep_forever()
            self._wait = None
            self.expire(trio.current_time())
