"""The fan-out's pacing: at most one fetch per `fanout_interval_ms`, whatever the fetches return.
The reader is a fake that answers at once (no I/O), so Trio's virtual clock measures the gaps."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest
import trio

from chattrio import fanout
from chattrio.config import Settings
from chattrio.fanout import Fanout
from chattrio.metrics import Registry
from chattrio.roomlog import RoomLog
from chattrio.storage.kafka import ReadBatch
from chattrio.transport.sessions import SessionRegistry

FETCHES = 5


class InstantReader:
    """A partition reader with nothing to read, whose fetches return at once."""

    def __init__(self) -> None:
        self.fetched_at: list[float] = []
        self.all_fetched = trio.Event()

    async def check_versions(self) -> None:
        pass

    async def assign_all(self, positions: dict) -> int:
        return 0

    async def lag(self, last_known: int) -> int:
        return last_known

    async def fetch(self, timeout: float) -> ReadBatch:
        self.fetched_at.append(trio.current_time())
        if len(self.fetched_at) == FETCHES:
            self.all_fetched.set()
        await trio.lowlevel.checkpoint()
        return ReadBatch([], [], {})


async def _fetch_times(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    reader = InstantReader()

    @contextlib.asynccontextmanager
    async def open_instant_reader(_settings: Settings) -> AsyncIterator[InstantReader]:
        yield reader

    monkeypatch.setattr(fanout, "open_partition_reader", open_instant_reader)
    fan = Fanout(settings, SessionRegistry(), RoomLog(settings.messages_topic), None, Registry())  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(fan.run)
        await reader.all_fetched.wait()
        nursery.cancel_scope.cancel()
    return reader.fetched_at[:FETCHES]


def _gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.mark.parametrize("interval_ms", [10, 50])
async def test_fetches_that_return_at_once_are_paced_one_per_interval(autojump_clock, monkeypatch, interval_ms):
    times = await _fetch_times(Settings(fanout_interval_ms=interval_ms), monkeypatch)
    assert _gaps(times) == pytest.approx([interval_ms / 1000] * (FETCHES - 1))


async def test_an_interval_of_zero_fetches_again_as_soon_as_a_fetch_returns(autojump_clock, monkeypatch):
    times = await _fetch_times(Settings(fanout_interval_ms=0), monkeypatch)
    assert _gaps(times) == pytest.approx([0.0] * (FETCHES - 1))
