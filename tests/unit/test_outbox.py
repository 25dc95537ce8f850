"""The outbox relay on in-memory storage: the lock, publish failures, redelivery."""

from __future__ import annotations

import dataclasses

import trio

from chattrio import outbox
from chattrio.metrics import Registry
from chattrio.outbox import OutboxRelay
from unit.harness import CoreNode, RecordingSession, Shared


def _relay(shared: Shared, node_id: str) -> OutboxRelay:
    return OutboxRelay(
        dataclasses.replace(shared.settings, node_id=node_id), shared.db, shared.cache, shared.log, Registry()
    )


async def _wait_until(condition) -> None:
    with trio.fail_after(600):  # seconds of Trio's mock clock: a wrong outcome fails, not hangs
        while not condition():
            await trio.sleep(outbox.POLL_SPACING)


async def _rooms(shared: Shared, count: int) -> None:
    for i in range(count):
        await shared.db.create_room(f"room {i}", "alice")


async def test_rows_are_published_in_order_after_a_publish_failure(autojump_clock):
    shared = Shared()
    await _rooms(shared, 3)
    shared.log.unavailable = True
    async with trio.open_nursery() as nursery:
        relay = _relay(shared, "a")
        await nursery.start(relay.run)
        await _wait_until(lambda: relay.holding)
        await trio.sleep(outbox.POLL_SPACING * 5)  # polls whose publishing fails
        shared.log.unavailable = False
        await _wait_until(lambda: len(shared.log.events) == 3)
        nursery.cancel_scope.cancel()
    assert [row.id for row in shared.log.events] == [1, 2, 3]
    assert all(entry.published for entry in shared.db.outbox)


async def test_a_relay_that_loses_the_lock_stops_and_another_node_takes_over(autojump_clock):
    shared = Shared()
    first, second = _relay(shared, "a"), _relay(shared, "b")
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        await _wait_until(lambda: first.holding)
        await nursery.start(second.run)
        await _rooms(shared, 1)
        await _wait_until(lambda: len(shared.log.events) == 1)
        assert not second.holding

        # Redis forgets the lock (a failover, an expiry during a pause) and b takes it
        shared.cache.locks.clear()
        await _wait_until(lambda: second.holding)
        await _wait_until(lambda: not first.holding)
        await _rooms(shared, 2)
        await _wait_until(lambda: len(shared.log.events) == 3)
        nursery.cancel_scope.cancel()
    assert [row.id for row in shared.log.events] == [1, 2, 3]


async def test_an_event_published_twice_is_announced_once(autojump_clock):
    shared = Shared()
    node = CoreNode(shared)
    watcher = RecordingSession("watcher")
    await node.frame(watcher, {"type": "SUBSCRIBE", "destination": "/topic/rooms"})
    await _rooms(shared, 1)
    shared.db.fail_next_mark = True  # published, then the commit that marks the row is lost
    async with trio.open_nursery() as nursery:
        await nursery.start(_relay(shared, "a").run)
        await _wait_until(lambda: all(entry.published for entry in shared.db.outbox))
        nursery.cancel_scope.cancel()
    assert [row.id for row in shared.log.events] == [1, 1]
    node.deliver()
    assert [f["room"]["name"] for f in watcher.of_type("ROOM_CREATED")] == ["room 0"]


async def test_an_idle_relay_polls_slowly_and_a_new_row_wakes_it_at_once(autojump_clock):
    shared = Shared()
    async with trio.open_nursery() as nursery:
        relay = _relay(shared, "a")
        await nursery.start(relay.run)
        await _wait_until(lambda: relay.holding)
        polls = shared.db.relay_calls
        await trio.sleep(outbox.FALLBACK_POLL * 10)
        assert shared.db.relay_calls - polls <= 11, "idle: one poll per fallback interval"

        await _rooms(shared, 1)
        with trio.fail_after(outbox.POLL_SPACING * 2):  # Trio's mock clock, not wall time
            while not shared.log.events:
                await trio.sleep(outbox.POLL_SPACING / 10)
        nursery.cancel_scope.cancel()
    assert [row.id for row in shared.log.events] == [1]


async def test_a_backlog_of_several_batches_is_published_without_pausing_between_them(autojump_clock):
    shared = Shared()
    async with trio.open_nursery() as nursery:
        relay = _relay(shared, "a")
        await nursery.start(relay.run)
        await _wait_until(lambda: relay.holding)
        await _rooms(shared, outbox.BATCH_SIZE * 2 + 50)
        with trio.fail_after(outbox.POLL_SPACING * 1.5):  # Trio's mock clock: one spacing at most
            while len(shared.log.events) < outbox.BATCH_SIZE * 2 + 50:
                await trio.sleep(outbox.POLL_SPACING / 20)
        nursery.cancel_scope.cancel()
