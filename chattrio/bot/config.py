"""Bot configuration: defaults, then a JSON file, then command-line flags (flags win)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from chattrio.config import INTERNAL_PORT_OFFSET


class BotConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    scenario: str = "adhoc"
    user_id_prefix: str = "bot"
    user_count: int = 10
    ramp_up_time_seconds: float = 5.0
    chat_duration_seconds: float = 10.0
    message_length: int = 32
    messages_per_second: float = 1.0  # per user; 0 connects users without chatting (idle)
    rooms: int = 1
    # TYPING frames per second per user (the server passes on one per 3 s per session and room).
    typing_per_second: float = 0.0
    rest_api_base_url: str | None = None
    web_socket_endpoint: str | None = None
    nodes: list[str] = []  # base URLs; users are spread round-robin across them
    # The nodes' internal base URLs (/metrics), in the order of `nodes`; empty: each node's
    # port + the node's default internal port offset.
    metrics_urls: list[str] = []
    loss_grace_seconds: float = 5.0
    workers: int = 1
    max_loss: int = 0
    max_duplicates: int = 0
    max_out_of_order: int = 0
    # Users that lost their connection and never got a session back before leaving.
    max_not_resumed: int = 0
    max_p99_ms: float | None = None
    # Idle capacity runs: stop opening connections after the first refusal.
    stop_on_refusal: bool = False
    # Node process pid files (same machine): their RSS is sampled for memory per connection.
    node_pid_files: list[str] = []
    # A shell command run `execAtSeconds` after the chat starts (e.g. killing a node).
    exec_command: str | None = None
    exec_at_seconds: float = 10.0
    # Hostile users in the first room, each with its own connections sending as fast as the
    # nodes allow (chattrio/bot/flooder.py); the report's figures are the other users'.
    flooders: int = 0
    output_dir: str = "bench-results"
    bench_log: str | None = None  # JSON Lines file that gets one record per run
    command_line: str = ""  # filled in by the CLI, recorded in reports

    def __post_init__(self) -> None:
        problems = []
        if self.user_count < 1:
            problems.append("userCount must be >= 1")
        if self.rooms < 1:
            problems.append("rooms must be >= 1")
        if self.message_length < 1 or self.message_length > 4000:
            problems.append("messageLength must be 1-4000")
        if self.messages_per_second < 0:
            problems.append("messagesPerSecond must be >= 0")
        if self.typing_per_second < 0:
            problems.append("typingPerSecond must be >= 0")
        if self.workers < 1:
            problems.append("workers must be >= 1")
        if self.flooders < 0:
            problems.append("flooders must be >= 0")
        if min(self.ramp_up_time_seconds, self.chat_duration_seconds, self.loss_grace_seconds) < 0:
            problems.append("durations must be >= 0")
        if not self.nodes and not self.rest_api_base_url:
            problems.append("give nodes (or restApiBaseUrl)")
        if self.metrics_urls and len(self.metrics_urls) != len(self.nodes or [self.rest_api_base_url]):
            problems.append("give one metricsUrl per node")
        if problems:
            raise msgspec.ValidationError("; ".join(problems))

    def metrics_endpoints(self) -> list[Node]:
        if self.metrics_urls:
            return [Node.from_base_url(u) for u in self.metrics_urls]
        return [
            Node.from_base_url(f"http://{node.host}:{node.port + INTERNAL_PORT_OFFSET}")
            for node in self.node_endpoints()
        ]

    def node_endpoints(self) -> list[Node]:
        if self.nodes:
            return [Node.from_base_url(u) for u in self.nodes]
        assert self.rest_api_base_url is not None
        return [Node.from_base_url(self.rest_api_base_url, self.web_socket_endpoint)]


@dataclass(frozen=True, slots=True)
class Node:
    base_url: str
    host: str
    port: int
    ws_host: str
    ws_port: int
    ws_path: str

    @classmethod
    def from_base_url(cls, base_url: str, ws_url: str | None = None) -> Node:
        base_url = base_url.rstrip("/")
        rest = urlsplit(base_url)
        if rest.scheme != "http" or not rest.hostname:
            raise msgspec.ValidationError(f"node URL must be http://host:port, got {base_url!r}")
        ws = urlsplit(ws_url) if ws_url else urlsplit(f"ws://{rest.netloc}/ws")
        if ws.scheme != "ws" or not ws.hostname:
            raise msgspec.ValidationError(f"WebSocket endpoint must be ws://host:port/path, got {ws_url!r}")
        return cls(base_url, rest.hostname, rest.port or 80, ws.hostname, ws.port or 80, ws.path or "/ws")


# flag -> config key; every flag defaults to None so that only flags actually given override.
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--scenario", "scenario", str, "name of the scenario, for the report"),
    ("--user-id-prefix", "userIdPrefix", str, "user ids are PREFIX<n>, n = 0..users-1"),
    ("--users", "userCount", int, "number of simulated users"),
    ("--ramp-up", "rampUpTimeSeconds", float, "seconds over which users connect"),
    ("--duration", "chatDurationSeconds", float, "seconds of chat after the ramp-up"),
    ("--message-length", "messageLength", int, "characters per message"),
    ("--rate", "messagesPerSecond", float, "messages per second per user (0: idle)"),
    ("--rooms", "rooms", int, "number of rooms, users spread evenly"),
    ("--typing-rate", "typingPerSecond", float, "TYPING frames per second per user (0: none)"),
    ("--rest-url", "restApiBaseUrl", str, "REST base URL of a single node"),
    ("--ws-url", "webSocketEndpoint", str, "WebSocket URL of that node"),
    ("--loss-grace", "lossGraceSeconds", float, "seconds to wait for late deliveries"),
    ("--workers", "workers", int, "worker processes (users split, results merged)"),
    ("--max-loss", "maxLoss", int, "lost deliveries tolerated"),
    ("--max-duplicates", "maxDuplicates", int, "duplicate deliveries tolerated"),
    ("--max-out-of-order", "maxOutOfOrder", int, "out-of-order deliveries tolerated"),
    ("--max-not-resumed", "maxNotResumed", int, "users tolerated that lost their connection and never resumed"),
    ("--max-p99-ms", "maxP99Ms", float, "fail when end-to-end p99 exceeds this"),
    ("--exec", "execCommand", str, "shell command to run during the chat"),
    ("--flooders", "flooders", int, "hostile users flooding the first room during the chat"),
    ("--exec-at", "execAtSeconds", float, "seconds after the chat start to run --exec"),
    ("--out", "outputDir", str, "directory for the JSON and HTML reports"),
    ("--bench-log", "benchLog", str, "JSON Lines file to append a result record to"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chattrio bot", description="Load bot for chattrio (docs/bot.md).")
    p.add_argument("--config", type=Path, help="JSON file with the configuration keys")
    p.add_argument(
        "--receive-bench",
        action="store_true",
        help="only measure this process's receive path (frames/s) and exit; no server needed",
    )
    p.add_argument(
        "--socket-bench",
        action="store_true",
        help="only measure the CPU per frame read and sent over local sockets and exit; no server needed",
    )
    p.add_argument(
        "--node", action="append", dest="nodes", metavar="URL", help="node base URL (repeat, or comma-separate)"
    )
    p.add_argument(
        "--metrics-url",
        action="append",
        dest="metricsUrls",
        metavar="URL",
        help="a node's internal base URL for /metrics, in the order of --node (default: each node's port + 10000)",
    )
    p.add_argument(
        "--pid-file",
        action="append",
        dest="nodePidFiles",
        metavar="PATH",
        help="pid file of a node process on this machine (repeatable)",
    )
    p.add_argument(
        "--stop-on-refusal",
        action="store_const",
        const=True,
        dest="stopOnRefusal",
        help="stop opening connections after the first refused one",
    )
    for flag, key, typ, help_text in _FLAGS:
        p.add_argument(flag, dest=key, type=typ, help=help_text)
    return p


def load_config(argv: list[str]) -> BotConfig:
    """Raises SystemExit for bad flags (argparse) and ValueError for a bad configuration."""
    args = build_parser().parse_args(argv)
    merged: dict = {}
    if args.config is not None:
        try:
            loaded = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {args.config}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config} must hold a JSON object")
        merged.update(loaded)
    flags = {
        k: v for k, v in vars(args).items() if k not in ("config", "receive_bench", "socket_bench") and v is not None
    }
    for key in ("nodes", "metricsUrls"):
        if key in flags:
            flags[key] = [u for item in flags[key] for u in item.split(",") if u]
    merged.update(flags)
    try:
        cfg = msgspec.convert(merged, BotConfig)
        cfg.node_endpoints()
        cfg.metrics_endpoints()
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    return cfg
