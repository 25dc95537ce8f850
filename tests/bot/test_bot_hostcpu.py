"""The machine's busy and stolen cores: parsing /proc/stat, attributing intervals to seconds."""

import time

import pytest
import trio

from chattrio.bot.hostcpu import CpuTimes, HostCpu, parse_cpu_times, read_cpu_times

STAT = """cpu  2268235 5724 314051 2169565 5485 0 85715 280670 0 0
cpu0 1134117 2862 157025 1084782 2742 0 42857 140335 0 0
intr 1 2 3
"""


def test_the_aggregate_line_gives_busy_and_steal_seconds():
    times = parse_cpu_times(STAT, 100)
    assert times.busy == pytest.approx((2268235 + 5724 + 314051 + 0 + 85715) / 100)
    assert times.steal == pytest.approx(2806.70)


def test_a_stat_without_the_aggregate_line_is_refused():
    with pytest.raises(ValueError):
        parse_cpu_times("cpu0 1 2 3 4 5 6 7 8\n", 100)


def test_each_interval_counts_in_the_second_of_its_middle():
    host = HostCpu(t0=1000.0)
    host.note(999.8, CpuTimes(busy=50.0, steal=1.0))
    host.note(1000.0, CpuTimes(busy=50.3, steal=1.0))  # before t0: not part of the run
    host.note(1001.0, CpuTimes(busy=52.0, steal=1.5))
    host.note(1003.0, CpuTimes(busy=54.0, steal=1.5))  # a late sample: [1001, 1003) counts in second 2
    assert host.busy_cores == [1.7, None, 1.0]
    assert host.steal_cores == [0.5, None, 0.0]
    assert host.mean(0, 3) == (1.35, 0.25)
    assert host.mean(5, 9) is None


def test_seconds_without_a_sample_stay_empty_and_are_left_out_of_the_mean():
    host = HostCpu(t0=0.0)
    host.note(1.0, CpuTimes(busy=0.0, steal=0.0))
    host.note(2.0, CpuTimes(busy=2.0, steal=0.0))
    host.note(4.0, CpuTimes(busy=2.0, steal=0.0))
    host.note(5.0, CpuTimes(busy=3.0, steal=0.5))
    assert host.busy_cores == [None, 2.0, None, 0.0, 1.0]
    assert host.mean(0, 5) == (1.0, 0.17)


@pytest.mark.skipif(read_cpu_times() is None, reason="no /proc/stat here")
async def test_the_sampler_fills_a_value_for_each_second_of_a_busy_machine():
    host = HostCpu(t0=time.time())

    async def spin():
        end = time.time() + 2.2
        while time.time() < end:
            sum(range(10_000))
            await trio.sleep(0)

    with trio.move_on_after(2.5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(host.run)
            await spin()
            nursery.cancel_scope.cancel()
    assert len(host.busy_cores) >= 2
    assert all(b is not None and b >= 0.5 for b in host.busy_cores[:2])  # this test spun a whole core
    assert all(s is not None and s >= 0 for s in host.steal_cores[:2])
