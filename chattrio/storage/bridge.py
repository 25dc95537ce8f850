"""The one place where Trio meets asyncio (trio-asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

import trio_asyncio

P = ParamSpec("P")
T = TypeVar("T")


@asynccontextmanager
async def open_asyncio_bridge() -> AsyncIterator[None]:
    """An asyncio loop living inside the current Trio run, for the storage adapters."""
    async with trio_asyncio.open_loop():
        yield


class AsyncioCancelled(Exception):
    """An asyncio library cancelled its own work (aiokafka does while closing after an outage).

    Our own cancellations come back as trio.Cancelled; this one is the library's, so it becomes an
    ordinary error for the restart loops instead of a BaseException that would end the node.
    """


async def run_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await an asyncio coroutine function from Trio; Trio cancellation cancels it."""
    try:
        return await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)
    except asyncio.CancelledError as exc:
        raise AsyncioCancelled(f"{getattr(fn, '__qualname__', fn)} was cancelled inside asyncio") from exc
