"""`python -m chattrio serve` runs a node; `python -m chattrio bot` runs the load bot."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

import trio

from chattrio.config import settings_from_env

# The garbage collector's generation thresholds for a node (CPython's default is 700, 10, 10).
# Under load, objects waiting on Kafka or a client live a few milliseconds; at 700 allocations per
# young collection they were caught alive, promoted, and the full collections that followed took
# 0.3-0.9 s of wall time every ~10 s at 1,700 sessions. docs/decisions/gc-thresholds.md.
NODE_GC_THRESHOLDS = (50_000, 20, 10)


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chattrio serve",
        description="Run one chattrio node. Every flag also reads CHATTRIO_<NAME> from the environment.",
    )
    parser.add_argument("--host", help="address to listen on (CHATTRIO_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (CHATTRIO_PORT, default 8080)")
    parser.add_argument(
        "--internal-port", type=int, help="port of /metrics and /readyz (CHATTRIO_INTERNAL_PORT, default port + 10000)"
    )
    parser.add_argument("--node-id", help="this node's name (CHATTRIO_NODE_ID, default the host name)")
    parser.add_argument("--pg-dsn", help="PostgreSQL DSN (CHATTRIO_PG_DSN)")
    parser.add_argument("--redis-url", help="Redis URL (CHATTRIO_REDIS_URL)")
    parser.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (CHATTRIO_KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic-prefix", help="prefix of topics, consumer groups and Redis keys")
    parser.add_argument("--log-json", action="store_true", default=None, help="log JSON lines")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (CHATTRIO_LOG_LEVEL)")
    args = parser.parse_args(argv)
    settings = settings_from_env(**vars(args))

    from chattrio.log import configure_logging
    from chattrio.nursery.node import run_node
    from chattrio.tokens import TokenConfigError

    configure_logging(settings.node_id, json_lines=settings.log_json, level=settings.log_level)
    gc.set_threshold(*NODE_GC_THRESHOLDS)
    try:
        trio.run(run_node, settings)
    except TokenConfigError as exc:
        logging.getLogger("chattrio").critical("node refused to start: %s", exc)
        return 1
    except Exception as exc:  # noqa: BLE001 - the node failed at boot or crashed: say why, exit 1
        logging.getLogger("chattrio").critical("node failed: %s", _describe(exc), exc_info=exc)
        return 1
    return 0


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"serve": _serve, "bot": _bot}
    if not argv or argv[0] not in commands:
        print("usage: python -m chattrio {serve,bot} [--help]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


def _bot(argv: list[str]) -> int:
    from chattrio.bot.cli import main as bot_main

    return bot_main(argv)


if __name__ == "__main__":
    sys.exit(main())
