"""The worker's garbage-collector policy: freeze what the ramp-up builds, give it back at the end."""

import gc

import trio

from chattrio.bot.runner import FREEZE_INTERVAL, freeze_while_ramping


async def test_the_ramp_is_frozen_and_given_back_at_the_end(autojump_clock):
    assert gc.get_freeze_count() == 0
    ramp_end = trio.current_time() + 3 * FREEZE_INTERVAL
    async with trio.open_nursery() as nursery:
        nursery.start_soon(freeze_while_ramping, ramp_end)
        await trio.sleep(FREEZE_INTERVAL / 2)
        assert gc.get_freeze_count() == 0  # the first freeze comes after one interval
        await trio.sleep(FREEZE_INTERVAL)
        assert gc.get_freeze_count() > 0
        await trio.sleep_until(ramp_end + FREEZE_INTERVAL)
        frozen = gc.get_freeze_count()
        built_after_the_ramp = [[n] for n in range(10_000)]
        await trio.sleep(10 * FREEZE_INTERVAL)
        assert gc.get_freeze_count() < frozen + len(built_after_the_ramp)  # nothing frozen any more
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0
