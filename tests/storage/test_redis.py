"""The Redis adapter against the test stack's Redis."""

from __future__ import annotations

import trio

from chattrio.storage import redis as redis_module
from chattrio.storage.redis import open_redis


async def test_a_heartbeat_of_more_memberships_than_one_call_extends_every_one(stack_env, run_prefix, monkeypatch):
    monkeypatch.setattr(redis_module, "HEARTBEAT_MEMBERSHIPS_PER_CALL", 3)
    room = 1
    async with open_redis(stack_env["CHATTRIO_REDIS_URL"], f"{run_prefix}-heartbeat") as cache:
        for n in range(8):
            await cache.enter(room, f"user-{n}", f"session-{n}", ttl=1.0)
        # Seven memberships in calls of three (3, 3, 1); user-7 gets no heartbeat.
        await cache.heartbeat([(room, f"user-{n}", f"session-{n}") for n in range(7)], ttl=30.0)
        await trio.sleep(1.5)
        assert await cache.members(room) == [f"user-{n}" for n in range(7)]
        assert await cache.sweep_gone([room]) == [(room, "user-7")]
