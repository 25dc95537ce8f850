"""Restart loops for the node's long-lived children.

A child is an async function taking `task_status`. Its first start must succeed: a failure
before the first `started()` propagates, so a misconfigured node fails at boot. After that, a
failure is logged with its traceback, counted, and followed by a restart after a capped,
jittered exponential backoff, reset once the child has run well for a while.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from chattrio.backoff import Backoff
from chattrio.metrics import Registry

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 0.5
# A child fails mostly while a backing service is away; its users wait for the restart after the
# service is back (live delivery, storage, presence), so the wait stays a few seconds. A retry
# every few seconds per child costs the service next to nothing.
MAX_BACKOFF = 5.0
HEALTHY_AFTER = 30.0

Child = Callable[..., Awaitable[None]]


class Supervisor:
    def __init__(self, metrics: Registry) -> None:
        self._ready: dict[str, bool] = {}
        self._restarts = metrics.counter("chattrio_child_restarts_total", "Supervised child restarts", ["child"])
        metrics.gauge(
            "chattrio_child_ready", "1 when a supervised child is running", self._ready_samples, labels=["child"]
        )

    def _ready_samples(self) -> dict[tuple[str, ...], float]:
        return {(name,): float(ready) for name, ready in self._ready.items()}

    def not_ready(self) -> list[str]:
        return [name for name, ready in self._ready.items() if not ready]

    def restarts(self, name: str) -> float:
        return self._restarts.value(name)

    async def supervise(
        self, name: str, child: Child, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        backoff = Backoff(INITIAL_BACKOFF, MAX_BACKOFF)
        first = True
        self._ready[name] = False
        while True:
            started_at = None
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(child)
                    started_at = trio.current_time()
                    self._ready[name] = True
                    if first:
                        first = False
                        task_status.started()
                    log.info("child started", extra={"child": name})
            except Exception:
                if first:
                    raise
                log.exception("child failed", extra={"child": name})
            else:
                log.error("child returned; children must run until cancelled", extra={"child": name})
            self._ready[name] = False
            self._restarts.inc(1, name)
            if started_at is not None and trio.current_time() - started_at > HEALTHY_AFTER:
                backoff.reset()
            await backoff.sleep()
