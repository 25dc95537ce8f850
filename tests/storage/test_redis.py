"""The Redis adapter against the test stack's Redis."""

from __future__ import annotations

import trio

from chattrio.storage.redis import open_redis


async def test_a_sweep_drops_a_room_nobody_is_in_from_the_presence_rooms(stack_env, run_prefix):
    """The sweep covers the rooms people are in: otherwise the set would grow by every room anyone
    ever entered, and every node would sweep all of them every few seconds."""
    deserted, crashed, lively = 1, 2, 3
    async with open_redis(stack_env["CHATTRIO_REDIS_URL"], f"{run_prefix}-sweep") as cache:
        await cache.enter(deserted, "leaver", "session-1", ttl=30.0)
        assert await cache.leave(deserted, "leaver", "session-1", grace=0.0) == 0
        assert await cache.remove_if_gone(deserted, "leaver")
        await cache.enter(crashed, "ghost", "session-2", ttl=0.5)
        await cache.enter(lively, "stayer", "session-3", ttl=30.0)
        await trio.sleep(1.0)
        assert sorted(await cache.presence_rooms()) == [deserted, crashed, lively]
        assert await cache.sweep_gone([deserted, crashed, lively]) == [(crashed, "ghost")]
        assert await cache.presence_rooms() == [lively]
        assert await cache.members(lively) == ["stayer"]
        # Entering again puts the room back.
        await cache.enter(deserted, "returner", "session-4", ttl=30.0)
        assert sorted(await cache.presence_rooms()) == [deserted, lively]
