"""One task per worker that reads every connection in steady state.

With a reader task per user, every incoming frame cost a task switch and a re-registration in
trio's one-shot epoll: in a fan-out run, where most reads bring one frame, that machinery rather
than the accounting was most of the bot's CPU.
Here the sockets are registered once in a level-triggered epoll of our own; trio only watches
that epoll's descriptor, and one wake-up serves every socket that became readable meanwhile,
dispatching its messages synchronously.

Only plain text messages take this path. Anything else (a ping to answer, a close frame, the end
of the stream, an error, a refused subscription) hands the connection back to its owner's task,
which handles it with `WsConnection.receive` as before and then lets the receiver watch again.
"""

from __future__ import annotations

import select
from functools import partial
from typing import Protocol

import trio

from chattrio.bot.ws import WsConnection, WsError

# Sockets served per wake-up at most; level-triggered epoll reports the rest on the next one.
MAX_EVENTS = 1024


class Reader(Protocol):
    """The owner of a watched connection (a SimUser)."""

    last_received: float  # trio clock: the keepalive's measure of silence

    def dispatch_all(self, payloads: list[bytes]) -> None:
        """Account for messages; may raise WsError when the session cannot go on."""


class _Watch:
    __slots__ = ("conn", "reader", "handed_back")

    def __init__(self, conn: WsConnection, reader: Reader) -> None:
        self.conn = conn
        self.reader = reader
        self.handed_back = trio.Event()


class Receiver:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watches: dict[int, _Watch] = {}  # by file descriptor

    @property
    def watching(self) -> int:
        return len(self._watches)

    async def watch(self, conn: WsConnection, reader: Reader) -> None:
        """Read `conn` for `reader` until it needs the reader's own task (`conn.needs_task`) or
        is closed; then return, with the socket no longer registered. Cancellation unregisters
        it too."""
        if conn.needs_task:
            return
        fd = conn.fileno()
        watch = _Watch(conn, reader)
        self._epoll.register(fd, select.EPOLLIN)
        self._watches[fd] = watch
        conn.on_close = partial(self._release, fd, watch)
        try:
            await watch.handed_back.wait()
        finally:
            self._release(fd, watch)

    def _release(self, fd: int, watch: _Watch) -> None:
        # Idempotent: the receiver, a close and the watcher's own exit may all get here.
        if self._watches.get(fd) is watch:
            del self._watches[fd]
            self._epoll.unregister(fd)
            watch.conn.on_close = None
        watch.handed_back.set()

    async def run(self) -> None:
        epoll = self._epoll
        watches = self._watches
        while True:
            await trio.lowlevel.wait_readable(epoll)
            now = trio.current_time()
            for fd, _ in epoll.poll(0, MAX_EVENTS):
                watch = watches[fd]  # polled fds are registered; only the line below releases one here
                watch.reader.last_received = now
                conn = watch.conn
                messages = conn.receive_nowait()
                if messages:
                    try:
                        watch.reader.dispatch_all(messages)
                    except WsError as exc:
                        conn.fail(exc)
                if conn.needs_task:
                    self._release(fd, watch)

    def close(self) -> None:
        """Once `run` has stopped and nothing is watched any more."""
        trio.lowlevel.notify_closing(self._epoll)
        self._epoll.close()
