"""The worker's garbage-collector policy, and the progress the workers report for the live line."""

import gc

import msgspec
import trio

from chattrio.bot.cli import progress_text
from chattrio.bot.runner import FREEZE_INTERVAL, Progress, freeze_while_ramping
from chattrio.bot.stats import Histogram


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


def test_progress_of_workers_adds_up_and_merges_their_last_second():
    first, second = Histogram(), Histogram()
    first.record_many([1_000] * 98)
    second.record_many([900_000, 900_000])  # two slow deliveries, both in the other worker
    snapshots = [
        Progress(
            connected=3,
            failed=1,
            live=2,
            sent=10,
            acked=9,
            delivered=40,
            reconnects=1,
            last_second_latency=first.to_wire(),
        ),
        # As a worker process sends it: JSON, converted back.
        msgspec.convert(
            msgspec.json.decode(
                msgspec.json.encode(
                    Progress(connected=4, live=4, sent=5, acked=5, delivered=2, last_second_latency=second.to_wire())
                )
            ),
            Progress,
        ),
        Progress(),  # a worker that has not reported yet
    ]
    total, last_second = Progress.combine(snapshots)
    assert (total.connected, total.failed, total.live, total.sent, total.acked, total.delivered, total.reconnects) == (
        7,
        1,
        6,
        15,
        14,
        42,
        1,
    )
    assert last_second.count == 100
    assert 880_000 <= last_second.percentile(99) <= 920_000  # the 99th of 100 is a slow one
    assert 984 <= last_second.percentile(50) <= 1_016  # bucket precision, 1.6 %


def test_the_progress_line_shows_the_last_seconds_p99():
    last_second = Histogram()
    last_second.record_many([2_000] * 99 + [250_000])
    line = progress_text(
        12.34, Progress(connected=5, failed=1, live=4, sent=8, acked=7, delivered=30, reconnects=2), last_second
    )
    assert line == (
        "[  12.3s] users 5 ok 1 failed 4 live | sent 8 acked 7 | delivered 30"
        " (p99 2.0 ms in the last second) | reconnects 2"
    )
    assert "(p99 - in the last second)" in progress_text(0.0, Progress(), Histogram())
