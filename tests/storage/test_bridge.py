"""The asyncio bridge: results, errors and cancellation crossing between Trio and the loop thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio
import uvloop

from chattrio.storage.bridge import AsyncioCancelled, open_asyncio_bridge, run_asyncio


async def _where() -> tuple[type[asyncio.AbstractEventLoop], str]:
    return type(asyncio.get_running_loop()), threading.current_thread().name


async def test_a_call_runs_on_the_bridge_threads_uvloop_and_returns_its_result():
    async with open_asyncio_bridge():
        loop_type, thread = await run_asyncio(_where)
    assert loop_type is uvloop.Loop
    assert thread == "asyncio-bridge" != threading.current_thread().name


async def test_an_error_raised_on_the_loop_reaches_the_trio_caller():
    async def fails() -> None:
        raise LookupError("from asyncio")

    async with open_asyncio_bridge():
        with pytest.raises(LookupError, match="from asyncio"):
            await run_asyncio(fails)


async def test_a_trio_cancellation_cancels_the_asyncio_side_and_waits_for_it():
    started, unwound = trio.Event(), []
    token = trio.lowlevel.current_trio_token()

    async def waits_forever() -> None:
        token.run_sync_soon(started.set)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            unwound.append("cancelled")
            raise

    async with open_asyncio_bridge():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_asyncio, waits_forever)
            await started.wait()
            nursery.cancel_scope.cancel()
        assert unwound == ["cancelled"]  # unwound before run_asyncio gave the cancellation back


async def test_a_cancellation_from_the_library_itself_is_an_ordinary_error():
    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    async with open_asyncio_bridge():
        with pytest.raises(AsyncioCancelled, match="cancels_itself"):
            await run_asyncio(cancels_itself)


async def test_run_asyncio_outside_a_bridge_is_refused():
    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError, match="open_asyncio_bridge"):
        await run_asyncio(nothing)
