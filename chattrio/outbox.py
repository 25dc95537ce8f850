"""The outbox poller: publishes committed users and rooms to Kafka, one node at a time.

The relay does not poll on a timer: each transaction that adds a row notifies the holder through
PostgreSQL (LISTEN/NOTIFY), and a slow poll catches what a lost notification would leave behind.
The Redis lock keeps the other nodes idle; it is not what makes the relay correct. Rows are
claimed in the database (FOR UPDATE SKIP LOCKED) in the transaction that marks them published,
and consumers are idempotent by event id, so two pollers, or a crash after publishing, cost at
most a duplicate event that nobody acts on twice.
"""

from __future__ import annotations

import logging
import uuid

import trio

from chattrio.config import Settings
from chattrio.metrics import Registry
from chattrio.storage.contracts import LockStore, MessageLog, OutboxStore
from chattrio.storage.kafka import KafkaUnavailable
from chattrio.storage.postgres import DatabaseUnavailable
from chattrio.storage.redis import CacheUnavailable

log = logging.getLogger(__name__)

LOCK_NAME = "outbox"
LOCK_TTL = 6.0
LOCK_RENEW_EVERY = 2.0
LOCK_RETRY_EVERY = 1.0
# Polls start at least this far apart, so that a burst of new rows is published in batches.
POLL_SPACING = 0.2
# Without a notification (the listening connection is being re-opened, or was cut silently), new
# rows are still found within this long.
FALLBACK_POLL = 5.0
LISTEN_RETRY = 1.0
BATCH_SIZE = 200
BACKLOG_EVERY = 5.0


class OutboxRelay:
    def __init__(
        self, settings: Settings, db: OutboxStore, cache: LockStore, producer: MessageLog, metrics: Registry
    ) -> None:
        self._settings = settings
        self._db = db
        self._cache = cache
        self._producer = producer
        self._owner = f"{settings.node_id}:{uuid.uuid4().hex[:8]}"
        self.backlog = 0
        self.backlog_age = 0.0
        self.holding = False
        self._rows_added = trio.Event()
        self._published = metrics.counter("chattrio_outbox_published_total", "Outbox events published to Kafka")
        metrics.gauge("chattrio_outbox_backlog", "Unpublished outbox rows", lambda: self.backlog)
        metrics.gauge(
            "chattrio_outbox_oldest_age_seconds", "Age of the oldest unpublished row", lambda: self.backlog_age
        )
        metrics.gauge("chattrio_outbox_lock_held", "1 when this node polls the outbox", lambda: int(self.holding))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_backlog)
            while True:
                if await self._try_lock():
                    await self._poll_while_holding()
                await trio.sleep(LOCK_RETRY_EVERY)

    async def _try_lock(self) -> bool:
        try:
            return await self._cache.hold_lock(LOCK_NAME, self._owner, LOCK_TTL)
        except CacheUnavailable as exc:
            log.warning("outbox lock unavailable, not polling: %s", exc)
            return False

    async def _poll_while_holding(self) -> None:
        """Poll until the lock cannot be renewed; then stop at once."""
        self.holding = True
        log.info("outbox lock taken", extra={"owner": self._owner})
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._poll)
                while True:
                    await trio.sleep(LOCK_RENEW_EVERY)
                    if not await self._try_lock():
                        log.warning("outbox lock lost; polling stops", extra={"owner": self._owner})
                        nursery.cancel_scope.cancel()
                        return
        finally:
            self.holding = False
            with trio.move_on_after(2) as scope:
                scope.shield = True  # let another node take over now, not after the TTL
                try:
                    await self._cache.release_lock(LOCK_NAME, self._owner)
                except CacheUnavailable:
                    pass

    async def _poll(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            while True:
                spaced = trio.current_time() + POLL_SPACING
                # A fresh event before the query: a row committed during it wakes the next wait.
                self._rows_added = trio.Event()
                try:
                    published = await self._db.relay_outbox(BATCH_SIZE, self._producer.publish_events)
                except (DatabaseUnavailable, KafkaUnavailable) as exc:
                    log.warning("outbox relay failed, retrying: %s", exc)
                    published = 0
                    self._rows_added.set()  # the rows are still there: retry after the spacing
                self._published.inc(published)
                if published < BATCH_SIZE:  # a full batch: more may be waiting, poll again at once
                    await trio.sleep_until(spaced)
                    with trio.move_on_after(FALLBACK_POLL):
                        await self._rows_added.wait()

    async def _listen(self) -> None:
        """Wake the poll for every new row; a lost connection is opened again."""
        while True:
            try:
                await self._db.listen_outbox(self._rows_added_now)
            except Exception as exc:  # the fallback poll goes on meanwhile
                log.warning("not listening for outbox rows, retrying: %s", exc)
            await trio.sleep(LISTEN_RETRY)

    def _rows_added_now(self) -> None:
        self._rows_added.set()

    async def _watch_backlog(self) -> None:
        while True:
            try:
                self.backlog, self.backlog_age = await self._db.outbox_backlog()
            except DatabaseUnavailable:
                pass
            await trio.sleep(BACKLOG_EVERY)
