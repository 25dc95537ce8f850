"""One chattrio node: its resources, its supervisor nursery, and its staged shutdown."""

from __future__ import annotations

import logging
import signal
from contextlib import AsyncExitStack

import trio

from chattrio.api import Api
from chattrio.chat import ChatService
from chattrio.config import Settings
from chattrio.fanout import Fanout
from chattrio.metrics import Registry
from chattrio.nursery.descriptors import fit_to_descriptor_limit
from chattrio.nursery.supervisor import Supervisor
from chattrio.outbox import OutboxRelay
from chattrio.persistence import Persistence
from chattrio.presence import Presence
from chattrio.roomlog import RoomLog
from chattrio.rooms import RoomDirectory
from chattrio.storage.bridge import open_asyncio_bridge
from chattrio.storage.kafka import ensure_topics, open_chat_producer
from chattrio.storage.postgres import open_database
from chattrio.storage.redis import open_redis
from chattrio.tokens import verifier_from_settings
from chattrio.transport.listener import HttpServer
from chattrio.transport.sessions import SessionRegistry

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_node(settings: Settings, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run until SIGTERM/SIGINT (or cancellation); then drain and return."""
    _check_auth(settings)
    settings = fit_to_descriptor_limit(settings)
    metrics = Registry()
    async with AsyncExitStack() as resources:
        await resources.enter_async_context(open_asyncio_bridge())
        db = await resources.enter_async_context(open_database(settings.pg_dsn, settings.events_topic))
        applied = await db.migrate()
        if applied:
            log.info("schema migrated", extra={"applied": applied})
        cache = await resources.enter_async_context(open_redis(settings.redis_url, settings.topic_prefix))
        await ensure_topics(settings)
        producer = await resources.enter_async_context(open_chat_producer(settings))

        supervisor = Supervisor(metrics)
        sessions = SessionRegistry()
        room_log = RoomLog(settings.messages_topic)
        rooms = RoomDirectory(db, cache, metrics, settings.unknown_room_cache_seconds)
        presence = Presence(settings, cache, sessions, producer, metrics)
        chat = ChatService(settings, sessions, room_log, rooms, producer, db, cache, presence, metrics)
        api = Api(settings, db, cache, rooms, metrics, supervisor.not_ready)
        http = HttpServer(settings, api, chat, sessions, metrics)
        children = {
            "fanout": Fanout(settings, sessions, room_log, rooms, metrics).run,
            "persistence": Persistence(settings, db, cache, metrics).run,
            "outbox": OutboxRelay(settings, db, cache, producer, metrics).run,
            "presence": presence.run,
            "internal-http": http.serve_internal,
            # Last, so no client connects before the fan-out can deliver to it.
            "http": http.serve,
        }
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                for name, child in children.items():
                    await nursery.start(supervisor.supervise, name, child)
                log.info(
                    "node ready",
                    extra={
                        "port": settings.port,
                        "internal_port": settings.internal_port_number,
                        "node_id": settings.node_id,
                    },
                )
                task_status.started()
                async for signum in signals:
                    log.info("stopping", extra={"signal": signal.Signals(signum).name})
                    break
            await _drain(http, settings)
            nursery.cancel_scope.cancel()
    log.info("node stopped")


def _check_auth(settings: Settings) -> None:
    """Refuse to start with unsafe token settings (TokenConfigError), and say which mode runs."""
    verifier = verifier_from_settings(settings)
    if settings.dev_mode:
        log.warning("dev mode: the public default secret is accepted; never expose this node")
    if settings.auth_mode == "open":
        log.warning(
            "auth mode open: anyone can log in as any user id, and unknown ids sign up "
            "(CHATTRIO_AUTH_MODE=jwt takes identities from your identity service)"
        )
    else:
        log.info("auth mode jwt: %s tokens from the identity service; sign-up by id is off", verifier.algorithm)


async def _drain(http: HttpServer, settings: Settings) -> None:
    """Stop accepting and close sessions with 1012 within the grace period; the producer is
    flushed and the consumers closed as the resources unwind after this."""
    http.request_drain()
    with trio.move_on_after(settings.shutdown_grace_seconds + 1):
        await http.drained.wait()
