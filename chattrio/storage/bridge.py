"""The one place where Trio meets asyncio (trio-asyncio)."""

from __future__ import annotations

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


async def run_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await an asyncio coroutine function from Trio; Trio cancellation cancels it."""
    return await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)
