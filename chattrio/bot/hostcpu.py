"""What the machine's CPUs did during a run, second by second, from /proc/stat: how many cores
were busy (every process, not only the bot) and how many the hypervisor took (steal).

Runs of the same code on a shared virtual machine vary by a factor of two; these figures tell
a saturated or stolen machine from a quiet one. Elsewhere than Linux there is no /proc/stat and
the series stay empty."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import trio

PROC_STAT = Path("/proc/stat")
SAMPLE_INTERVAL = 1.0


@dataclass(frozen=True)
class CpuTimes:
    """Seconds of CPU time since boot, summed over all cores."""

    busy: float  # user, nice, system, irq, softirq (guest time is inside user)
    steal: float


def parse_cpu_times(stat: str, ticks_per_second: int) -> CpuTimes:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            return CpuTimes((user + nice + system + irq + softirq) / ticks_per_second, steal / ticks_per_second)
    raise ValueError("no aggregate cpu line in /proc/stat")


def read_cpu_times() -> CpuTimes | None:
    try:
        return parse_cpu_times(PROC_STAT.read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return None


class HostCpu:
    """Busy and stolen cores per whole second since `t0`, as the bot's timeline counts seconds."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.busy_cores: list[float | None] = []
        self.steal_cores: list[float | None] = []
        self._last: tuple[float, CpuTimes] | None = None

    def note(self, now: float, times: CpuTimes) -> None:
        """Record the cores used since the previous note, in the second that `now` closes."""
        last, self._last = self._last, (now, times)
        if last is None or now <= last[0]:
            return
        elapsed = now - last[0]
        middle = now - elapsed / 2 - self.t0  # the interval measured belongs to its middle's second
        if middle < 0:
            return
        second = int(middle)
        for series, value in (
            (self.busy_cores, (times.busy - last[1].busy) / elapsed),
            (self.steal_cores, (times.steal - last[1].steal) / elapsed),
        ):
            if second >= len(series):
                series.extend([None] * (second + 1 - len(series)))
            series[second] = round(value, 2)

    def mean(self, first: int, last: int) -> tuple[float, float] | None:
        """Mean busy and stolen cores over seconds [first, last), or None when nothing was sampled."""
        pairs = [
            (b, s)
            for b, s in zip(self.busy_cores[first:last], self.steal_cores[first:last])
            if b is not None and s is not None
        ]
        if not pairs:
            return None
        return (round(sum(b for b, _ in pairs) / len(pairs), 2), round(sum(s for _, s in pairs) / len(pairs), 2))

    async def run(self) -> None:
        """Sample once a second, on the second's boundary, until cancelled."""
        while True:
            times = read_cpu_times()
            if times is None:
                return
            self.note(time.time(), times)
            into = (time.time() - self.t0) % SAMPLE_INTERVAL
            await trio.sleep(SAMPLE_INTERVAL - into)
