"""The node's file-descriptor budget: WebSocket sessions get what the descriptor limit leaves
after everything else the node must keep open, so a full node still reaches Kafka, PostgreSQL
and Redis and still answers /metrics instead of failing every accept and connect with EMFILE."""

from __future__ import annotations

import dataclasses
import logging
import resource

from chattrio.config import Settings

log = logging.getLogger(__name__)

# Descriptors besides client connections: the backing services' pools and brokers, the
# listeners, the internal port's scrapes, log files and the bridge thread's event loop.
DESCRIPTORS_BESIDES_CLIENTS = 256


def sessions_within(descriptor_limit: int, settings: Settings) -> int:
    """How many WebSocket sessions fit in `descriptor_limit` beside plain-HTTP connections at
    their cap and the node's own descriptors; at most the configured max_connections."""
    spare = descriptor_limit - settings.max_http_connections - DESCRIPTORS_BESIDES_CLIENTS
    return min(settings.max_connections, spare)


def fit_to_descriptor_limit(settings: Settings) -> Settings:
    """Raise the soft descriptor limit as far as the hard limit allows; if that still cannot hold
    max_connections, lower max_connections to what fits and say so. Fails when nothing fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = settings.max_connections + settings.max_http_connections + DESCRIPTORS_BESIDES_CLIENTS
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the descriptor limit to %d: %r", wanted, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return settings
    fitting = sessions_within(soft, settings)
    if fitting < 1:
        raise SystemExit(
            f"config error: the descriptor limit {soft} leaves no room for WebSocket sessions beside "
            f"{settings.max_http_connections} HTTP connections (CHATTRIO_MAX_HTTP_CONNECTIONS) and "
            f"{DESCRIPTORS_BESIDES_CLIENTS} of the node's own; raise `ulimit -n`"
        )
    log.warning(
        "descriptor limit %d (hard %s) holds %d WebSocket sessions, not CHATTRIO_MAX_CONNECTIONS=%d: "
        "the node answers 503 beyond them",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        fitting,
        settings.max_connections,
    )
    return dataclasses.replace(settings, max_connections=fitting)
