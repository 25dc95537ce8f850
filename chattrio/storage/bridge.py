"""The one place where Trio meets asyncio: an asyncio event loop on a thread of its own.

asyncpg and aiokafka run on that loop; Trio code awaits them through `run_asyncio`. A loop
on its own thread rather than trio-asyncio's inside the Trio run, where every asyncio step takes a
pass of Trio's scheduler; uvloop's loop rather than asyncio's own, which costs the thread more
CPU per call (docs/decisions/asyncio-bridge-thread.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Generic, ParamSpec, TypeVar

import trio
import uvloop

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

# After a Trio cancellation, how long to wait for the asyncio side to finish cancelling, so that
# no work continues unseen behind the caller's back.
CANCEL_GRACE = 5.0
STOP_TIMEOUT = 10.0

_current_loop: contextvars.ContextVar[asyncio.AbstractEventLoop] = contextvars.ContextVar("asyncio_bridge_loop")


class AsyncioCancelled(Exception):
    """An asyncio library cancelled its own work (aiokafka does while closing after an outage).

    Our own cancellations come back as trio.Cancelled; this one is the library's, so it becomes an
    ordinary error for the restart loops instead of a BaseException that would end the node.
    """


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        # Whatever is still running was abandoned by its caller: cancel it and let it unwind.
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


@asynccontextmanager
async def open_asyncio_bridge() -> AsyncIterator[None]:
    """An asyncio loop on its own thread for the storage adapters, for as long as this lasts."""
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=_serve_loop, args=(loop,), name="asyncio-bridge", daemon=True)
    thread.start()
    reset = _current_loop.set(loop)
    try:
        yield
    finally:
        _current_loop.reset(reset)
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
            await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        if thread.is_alive():
            log.warning("the asyncio loop did not stop within %.0fs", STOP_TIMEOUT)


class _Call(Generic[T]):
    """One coroutine run on the asyncio loop, reporting back to the Trio run that started it."""

    __slots__ = ("_loop", "_token", "_coro", "task", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> None:
        self._loop = loop
        self._token = trio.lowlevel.current_trio_token()
        self._coro = coro
        self.task: asyncio.Future[T] | None = None
        self.done = trio.Event()

    def start(self) -> None:  # on the asyncio thread
        self.task = asyncio.ensure_future(self._coro, loop=self._loop)
        self.task.add_done_callback(self._finished)

    def cancel(self) -> None:  # on the asyncio thread, always after start (the loop is FIFO)
        if self.task is not None:
            self.task.cancel()

    def _finished(self, _task: asyncio.Future[T]) -> None:  # on the asyncio thread
        try:
            self._token.run_sync_soon(self.done.set)
        except trio.RunFinishedError:
            pass  # nobody is waiting any more


async def run_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await an asyncio coroutine function from Trio; Trio cancellation cancels it."""
    try:
        loop = _current_loop.get()
    except LookupError:
        raise RuntimeError("run_asyncio needs open_asyncio_bridge() around it") from None
    call = _Call(loop, _call_on_loop(fn, args, kwargs))
    loop.call_soon_threadsafe(call.start)
    try:
        await call.done.wait()
    except trio.Cancelled:
        loop.call_soon_threadsafe(call.cancel)
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_GRACE):
            await call.done.wait()
        raise
    task = call.task
    assert task is not None
    if task.cancelled():
        raise AsyncioCancelled(f"{getattr(fn, '__qualname__', fn)} was cancelled inside asyncio")
    return task.result()


async def _call_on_loop(fn: Callable[..., Awaitable[T]], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    """Calls `fn` on the asyncio thread, where the libraries expect their running loop."""
    return await fn(*args, **kwargs)
