"""The Redis adapter against the test stack's Redis."""

from __future__ import annotations

import trio

from chattrio.storage.redis import open_redis


async def test_a_sweep_drops_a_room_nobody_is_in_from_the_presence_rooms(stack_env, run_prefix):
    """The sweep covers the rooms people are in: otherwise the set would grow by every room anyone
    ever entered, and every node would sweep all of them every few seconds."""
    deserted, crashed, lively = 1, 2, 3
    async with open_redis(stack_env["CHATTRIO_REDIS_URL"], f"{run_prefix}-sweep") as cache:
        await cache.enter([(deserted, "leaver", "session-1")], ttl=30.0)
        assert await cache.leave([(deserted, "leaver", "session-1")], grace=0.0) == [0]
        assert await cache.remove_if_gone(deserted, "leaver")
        await cache.enter([(crashed, "ghost", "session-2")], ttl=0.5)
        await cache.enter([(lively, "stayer", "session-3")], ttl=30.0)
        await trio.sleep(1.0)
        assert sorted(await cache.presence_rooms()) == [deserted, crashed, lively]
        assert await cache.sweep_gone([deserted, crashed, lively]) == [(crashed, "ghost")]
        assert await cache.presence_rooms() == [lively]
        assert await cache.members(lively) == ["stayer"]
        # Entering again puts the room back.
        await cache.enter([(deserted, "returner", "session-4")], ttl=30.0)
        assert sorted(await cache.presence_rooms()) == [deserted, lively]


async def test_entries_of_one_call_are_applied_in_order(stack_env, run_prefix):
    """A batch of enters decides each join as if the entries came one by one: of two sessions of
    one user entering a room, only the first makes a join; leaves count what is left after each."""
    room, other = 1, 2
    async with open_redis(stack_env["CHATTRIO_REDIS_URL"], f"{run_prefix}-batch") as cache:
        entries = [(room, "ann", "s1"), (room, "ann", "s2"), (room, "bob", "s3"), (other, "ann", "s4")]
        assert await cache.enter(entries, ttl=30.0) == [True, False, True, True]
        assert await cache.members(room) == ["ann", "bob"]
        assert sorted(await cache.presence_rooms()) == [room, other]
        assert await cache.enter([(room, "ann", "s5")], ttl=30.0) == [False]
        assert await cache.leave([(room, "ann", "s1"), (room, "ann", "s2"), (room, "bob", "s3")], grace=30.0) == [
            2,
            1,
            0,
        ]


async def test_a_leave_after_the_sweep_does_not_bring_the_user_back(stack_env, run_prefix):
    """A leave that waited out a Redis outage can arrive after the sweep removed (and announced)
    the user: it must not add them back, or a second "left" would follow the grace."""
    room = 1
    async with open_redis(stack_env["CHATTRIO_REDIS_URL"], f"{run_prefix}-late-leave") as cache:
        await cache.enter([(room, "late", "session-1")], ttl=0.2)
        with trio.fail_after(30):
            while await cache.sweep_gone([room]) != [(room, "late")]:
                await trio.sleep(0.1)
        assert await cache.leave([(room, "late", "session-1")], grace=30.0) == [0]
        assert await cache.members(room) == []
        assert not await cache.remove_if_gone(room, "late")


async def test_an_enter_tried_again_by_its_session_still_joins(stack_env, run_prefix):
    """An enter whose answer was lost is sent again: while the session is the user's only one,
    the join is still due. Another session of the user, or the same one back within the grace, is
    no join."""
    room = 1
    async with open_redis(stack_env["CHATTRIO_REDIS_URL"], f"{run_prefix}-retried-enter") as cache:
        assert await cache.enter([(room, "ann", "s1")], ttl=30.0) == [True]
        assert await cache.enter([(room, "ann", "s1")], ttl=30.0) == [True]
        assert await cache.enter([(room, "ann", "s2")], ttl=30.0) == [False]
        assert await cache.leave([(room, "ann", "s1"), (room, "ann", "s2")], grace=30.0) == [1, 0]
        assert await cache.enter([(room, "ann", "s1")], ttl=30.0) == [False]
