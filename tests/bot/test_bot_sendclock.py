"""The worker's send clock: turns in due order, at the rate, never after the end, and no burst
after a stall. Pure scheduling, so fake senders on trio's mock clock."""

from contextlib import ExitStack
from types import SimpleNamespace

import pytest
import trio

from chattrio.bot import sendclock
from chattrio.bot.sendclock import TICK, SendClock

START, END = 10.0, 20.0


class FakeSender:
    def __init__(self, name: str, log: list[tuple[float, str]], stall: trio.Event | None = None) -> None:
        self.name, self.log, self.stall = name, log, stall

    def send_next(self):
        self.log.append((trio.current_time(), self.name))
        if self.stall is None:
            return None
        stall, self.stall = self.stall, None
        return stall.wait  # the write completes when the test says so

    def times(self) -> list[float]:
        return [t for t, name in self.log if name == self.name]


@pytest.fixture
def scheduled():
    """Senders stay scheduled until the end of the test."""
    with ExitStack() as stack:
        yield lambda clock, sender: stack.enter_context(clock.schedule(sender))


@pytest.fixture
def phases(monkeypatch):
    """Fix the users' random phases (fractions of the interval), in the order they join."""

    def set_phases(*values: float) -> None:
        monkeypatch.setattr(sendclock, "random", SimpleNamespace(random=iter(values).__next__))

    return set_phases


async def test_turns_come_in_phase_order_at_the_rate_and_stop_at_the_end(autojump_clock, nursery, phases, scheduled):
    phases(0.9, 0.1, 0.5)
    clock = SendClock(rate=2, start=START, end=END)
    nursery.start_soon(clock.run)
    log: list[tuple[float, str]] = []
    senders = [FakeSender(name, log) for name in "abc"]
    for s in senders:
        scheduled(clock, s)
    await trio.sleep_until(END + 5)
    assert [name for _, name in log] == list("bca") * 20  # 10 s at 2/s, every round in phase order
    for s, phase in zip(senders, (0.9, 0.1, 0.5)):
        for k, t in enumerate(s.times()):
            due = START + phase * 0.5 + k * 0.5
            assert due <= t <= due + TICK + 1e-9  # served at the next tick of the clock's grid
    assert log[-1][0] < END + TICK


async def test_one_wake_up_serves_everyone_due_in_the_same_tick(autojump_clock, nursery, phases, scheduled):
    phases(0.0011, 0.002, 0.003)  # due within 2 ms of each other, between two ticks
    clock = SendClock(rate=1, start=START, end=START + 0.5)
    nursery.start_soon(clock.run)
    log: list[tuple[float, str]] = []
    for name in "abc":
        scheduled(clock, FakeSender(name, log))
    await trio.sleep_until(START + 1)
    assert [name for _, name in log] == list("abc")
    assert len({t for t, _ in log}) == 1


async def test_a_late_joiner_is_served_at_once_even_while_the_clock_sleeps(autojump_clock, nursery, phases, scheduled):
    phases(0.8, 0.0)
    clock = SendClock(rate=1, start=START, end=START + 1)
    nursery.start_soon(clock.run)
    log: list[tuple[float, str]] = []
    scheduled(clock, FakeSender("early", log))  # due at START + 0.8
    await trio.sleep_until(START + 0.3)
    scheduled(clock, FakeSender("late", log))  # its phase has passed: due now
    await trio.sleep_until(START + 2)
    assert [name for _, name in log] == ["late", "early"]
    assert START + 0.3 <= log[0][0] <= START + 0.3 + TICK


async def test_after_a_write_stall_turns_resume_at_the_rate_without_a_burst(autojump_clock, nursery, phases, scheduled):
    phases(0.0)
    clock = SendClock(rate=2, start=START, end=END)
    nursery.start_soon(clock.run)
    log: list[tuple[float, str]] = []
    stall = trio.Event()
    sender = FakeSender("a", log, stall)
    scheduled(clock, sender)
    await trio.sleep_until(START + 1.7)
    assert len(log) == 1  # the first write has not finished: no further turn
    stall.set()
    await trio.sleep_until(END + 1)
    times = sender.times()
    # Turns at 10.5, 11.0 and 11.5 were missed; the next is when the write finished, then every 0.5 s.
    assert times[1] == pytest.approx(START + 1.7, abs=TICK)
    assert all(b - a == pytest.approx(0.5, abs=TICK) for a, b in zip(times[1:], times[2:]))
    assert len(times) == 1 + 17  # 11.7 .. 19.7


async def test_after_an_event_loop_stall_the_missed_turns_are_skipped(autojump_clock, nursery, phases, scheduled):
    phases(0.0)
    clock = SendClock(rate=2, start=START, end=START + 5)
    log: list[tuple[float, str]] = []

    class Hog(FakeSender):
        def send_next(self):
            result = super().send_next()
            if len(self.log) == 1:
                autojump_clock.jump(1.7)  # the whole worker was busy (or starved) for 1.7 s
            return result

    nursery.start_soon(clock.run)
    scheduled(clock, Hog("a", log))
    await trio.sleep_until(START + 6)
    times = [t for t, _ in log]
    # Like the per-user loop: the overdue turn goes out late, the next one right after it (its
    # due time has passed too), then turns follow from that moment.
    assert times[0] == pytest.approx(START, abs=TICK)
    assert times[1] == times[2] == pytest.approx(START + 1.7, abs=TICK)
    assert all(b - a == pytest.approx(0.5, abs=TICK) for a, b in zip(times[2:], times[3:]))
    assert len(times) == 3 + 6  # then 12.2 .. 14.7


async def test_a_sender_that_leaves_gets_no_more_turns(autojump_clock, nursery, phases, scheduled):
    phases(0.0, 0.5)
    clock = SendClock(rate=1, start=START, end=END)
    nursery.start_soon(clock.run)
    log: list[tuple[float, str]] = []
    with clock.schedule(FakeSender("leaves", log)):
        scheduled(clock, FakeSender("stays", log))
        await trio.sleep_until(START + 2.2)
    await trio.sleep_until(END + 1)
    assert [name for _, name in log].count("leaves") == 3  # 10, 11, 12
    assert [name for _, name in log].count("stays") == 10


async def test_rate_zero_schedules_nobody(autojump_clock, nursery):
    clock = SendClock(rate=0, start=START, end=END)
    nursery.start_soon(clock.run)
    log: list[tuple[float, str]] = []
    with clock.schedule(FakeSender("idle", log)):
        await trio.sleep_until(END + 1)
    assert log == []
