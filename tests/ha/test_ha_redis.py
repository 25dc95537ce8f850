"""The node's Redis client on the ha stack follows a Sentinel failover without being reopened."""

from __future__ import annotations

import uuid

import trio
from ha_helpers import MEMBER_START_TIMEOUT, ha, ha_env, requires_ha  # noqa: F401 - ha_env is a fixture

from chattrio.storage.redis import CacheUnavailable, open_redis

pytestmark = requires_ha

# Sentinel declares the primary down after 3 s, then elects a leader and promotes the replica.
FAILOVER_TIMEOUT = 60.0
# A replica (re)started by the test before has to finish its full resync first.
SYNC_TIMEOUT = 60.0


async def _write_once_failed_over(cache, user_id: str) -> None:
    """Write until a write succeeds: until the client reaches the primary Sentinel promoted."""
    with trio.fail_after(FAILOVER_TIMEOUT):
        while True:
            try:
                return await cache.cache_users([user_id])
            except CacheUnavailable:
                await trio.sleep(0.2)


async def _copied_to_the_replica(cache) -> None:
    """Wait until the replica acknowledged everything written so far (Redis's WAIT)."""
    with trio.fail_after(SYNC_TIMEOUT):
        while await cache._call(cache._client.wait(1, 1000)) < 1:
            pass


async def test_writes_go_to_the_replica_sentinel_promotes(ha_env):
    primary = await trio.to_thread.run_sync(ha, "primary", "redis")
    async with open_redis(ha_env["CHATTRIO_REDIS_URL"], f"ha-redis-{uuid.uuid4().hex[:8]}") as cache:
        await cache.cache_users(["before"])
        await _copied_to_the_replica(cache)
        await trio.to_thread.run_sync(ha, "kill", primary)
        try:
            await _write_once_failed_over(cache, "after")
            promoted = await trio.to_thread.run_sync(ha, "primary", "redis")
            assert promoted != primary
            # The write landed on the new primary, which also holds what its replica had copied.
            assert await cache._call(cache._client.smembers(f"{cache._ns}:users")) == {b"before", b"after"}
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(lambda: ha("start", primary, timeout=MEMBER_START_TIMEOUT))


async def test_a_hung_primary_is_left_for_the_one_sentinel_promotes(ha_env):
    """A SIGSTOPped primary keeps its connections open and only times commands out; the client
    must ask the Sentinels again and reach the promoted replica while the old primary still hangs."""
    primary = await trio.to_thread.run_sync(ha, "primary", "redis")
    async with open_redis(ha_env["CHATTRIO_REDIS_URL"], f"ha-redis-{uuid.uuid4().hex[:8]}") as cache:
        await cache.cache_users(["before"])
        await _copied_to_the_replica(cache)
        await trio.to_thread.run_sync(ha, "signal", primary, "STOP")
        try:
            await _write_once_failed_over(cache, "during")
            # The old primary still hangs, so the write went to the replica Sentinel promoted
            # (ha.sh's role check would hang on the old one), which holds what it had copied.
            assert await cache._call(cache._client.smembers(f"{cache._ns}:users")) == {b"before", b"during"}
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(ha, "signal", primary, "CONT")
                await trio.to_thread.run_sync(lambda: ha("restart", primary, timeout=MEMBER_START_TIMEOUT))
