"""The supervisor's restart policy, with fake children on Trio's autojump clock (no I/O)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from chattrio import backoff as backoff_module
from chattrio.metrics import Registry
from chattrio.nursery.supervisor import HEALTHY_AFTER, INITIAL_BACKOFF, MAX_BACKOFF, Supervisor


class FixedJitter:
    """Stands in for the `random` module: records the jitter range, returns a fixed factor."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return self.factor


@pytest.fixture
def jitter(monkeypatch) -> FixedJitter:
    fake = FixedJitter()
    monkeypatch.setattr(backoff_module, "random", fake)
    return fake


class FakeChild:
    """Starts, then runs for run_for[n] seconds of its n-th start (forever past the list), then fails
    (or returns, with returns=True). fail_before_start lists starts that fail before started()."""

    def __init__(self, run_for=(), *, returns: bool = False, fail_before_start=()) -> None:
        self.run_for = list(run_for)
        self.returns = returns
        self.fail_before_start = set(fail_before_start)
        self.starts: list[float] = []
        self.attempts = 0

    async def __call__(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        attempt = self.attempts
        self.attempts += 1
        if attempt in self.fail_before_start:
            raise RuntimeError(f"cannot start (attempt {attempt})")
        task_status.started()
        self.starts.append(trio.current_time())
        index = len(self.starts) - 1
        if index >= len(self.run_for):
            await trio.sleep_forever()
        await trio.sleep(self.run_for[index])
        if self.returns:
            return
        raise ValueError(f"child failed (run {index})")


def _gaps(child: FakeChild, runs: list[float]) -> list[float]:
    """Time between a run's end and the next start."""
    return [round(child.starts[i + 1] - (child.starts[i] + runs[i]), 6) for i in range(len(child.starts) - 1)]


async def _supervise_for(seconds: float, child: FakeChild, name: str = "fanout") -> Supervisor:
    """Supervise `child` for `seconds` of (autojump) time, then stop; returns the supervisor."""
    supervisor = Supervisor(Registry())
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.supervise, name, child)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return supervisor


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in _leaves(sub)]
    return [error]


async def test_failure_before_the_first_start_propagates(autojump_clock, jitter):
    supervisor = Supervisor(Registry())
    child = FakeChild(fail_before_start={0})
    failures = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.supervise, "kafka", child)
    except* RuntimeError as group:
        failures.extend(_leaves(group))
    assert len(failures) == 1 and "attempt 0" in str(failures[0])
    assert child.attempts == 1  # not retried: a misconfigured node fails at boot
    assert supervisor.restarts("kafka") == 0


async def test_start_returns_once_the_child_has_started(autojump_clock, jitter):
    supervisor = Supervisor(Registry())
    child = FakeChild()
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.supervise, "fanout", child)
        assert child.starts == [0.0]
        assert supervisor.not_ready() == []
        nursery.cancel_scope.cancel()
    assert supervisor.restarts("fanout") == 0


async def test_backoff_doubles_up_to_the_cap(autojump_clock, jitter):
    runs = [0.0] * 10
    child = FakeChild(runs)
    supervisor = await _supervise_for(200, child)
    assert len(child.starts) == 11
    assert _gaps(child, runs) == [0.5, 1, 2, 4, 5, 5, 5, 5, 5, 5]
    assert supervisor.restarts("fanout") == 10
    assert INITIAL_BACKOFF == 0.5 and MAX_BACKOFF == 5.0


async def test_backoff_is_jittered_by_half_either_way(autojump_clock, jitter):
    jitter.factor = 1.5
    runs = [0.0] * 3
    child = FakeChild(runs)
    await _supervise_for(60, child)
    assert jitter.ranges == [(0.5, 1.5)] * 3
    assert _gaps(child, runs) == [0.75, 1.5, 3.0]


async def test_real_jitter_stays_within_bounds(autojump_clock):
    runs = [0.0] * 6
    child = FakeChild(runs)
    await _supervise_for(200, child)
    for gap, base in zip(_gaps(child, runs), [0.5, 1, 2, 4, 5, 5]):
        assert 0.5 * base <= gap <= 1.5 * base


async def test_backoff_resets_after_a_healthy_run(autojump_clock, jitter):
    runs = [0.0, 0.0, 0.0, HEALTHY_AFTER + 1, 0.0]
    child = FakeChild(runs)
    await _supervise_for(100, child, "outbox")
    # after the healthy fourth run the delay starts over at 0.5 (not 4), then doubles again
    assert _gaps(child, runs) == [0.5, 1, 2, 0.5, 1]


async def test_a_short_run_does_not_reset_the_backoff(autojump_clock, jitter):
    runs = [0.0, 0.0, HEALTHY_AFTER, 0.0]  # exactly HEALTHY_AFTER is not "more than"
    child = FakeChild(runs)
    await _supervise_for(100, child, "outbox")
    assert _gaps(child, runs) == [0.5, 1, 2, 4]


async def test_a_child_that_returns_is_restarted(autojump_clock, jitter):
    runs = [5.0, 5.0]
    child = FakeChild(runs, returns=True)
    supervisor = await _supervise_for(30, child, "presence")
    assert len(child.starts) == 3
    assert _gaps(child, runs) == [0.5, 1]
    assert supervisor.restarts("presence") == 2


async def test_a_failed_restart_is_retried_not_propagated(autojump_clock, jitter):
    supervisor = Supervisor(Registry())
    child = FakeChild([1.0], fail_before_start={1, 2})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.supervise, "fanout", child)
        await trio.sleep(30)
        assert supervisor.not_ready() == []
        nursery.cancel_scope.cancel()
    assert child.attempts == 4  # started, failed, two restarts that could not start, then started
    assert child.starts == [0.0, pytest.approx(1 + 0.5 + 1 + 2)]
    assert supervisor.restarts("fanout") == 3


async def test_readiness_follows_the_child(autojump_clock, jitter):
    registry = Registry()
    supervisor = Supervisor(registry)
    child = FakeChild([10.0])
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.supervise, "fanout", child)
        await nursery.start(supervisor.supervise, "outbox", FakeChild())
        assert supervisor.not_ready() == []
        assert 'chattrio_child_ready{child="fanout"} 1' in registry.render()
        await trio.sleep(10.1)  # fanout failed at t=10 and waits 0.5 s
        assert supervisor.not_ready() == ["fanout"]
        text = registry.render()
        assert 'chattrio_child_ready{child="fanout"} 0' in text
        assert 'chattrio_child_ready{child="outbox"} 1' in text
        assert 'chattrio_child_restarts_total{child="fanout"} 1' in text
        await trio.sleep(1)
        assert supervisor.not_ready() == []
        nursery.cancel_scope.cancel()
    assert supervisor.restarts("outbox") == 0


async def test_cancellation_stops_without_a_restart(autojump_clock, jitter):
    supervisor = Supervisor(Registry())
    child = FakeChild()
    with trio.move_on_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.supervise, "fanout", child)
    assert child.starts == [0.0]
    assert supervisor.restarts("fanout") == 0
