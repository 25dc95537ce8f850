"""Bot configuration: defaults, then a JSON file, then command-line flags (flags win)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from chattrio.config import INTERNAL_PORT_OFFSET

SYSTEMS = ("chattrio", "centrifugo")
CENTRIFUGO_WS_PATH = "/connection/websocket"


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
    # Connect every user through this base URL (a load balancer in front of `nodes`) instead of
    # a node of its own; `nodes` are still the ones whose metrics and memory are read.
    load_balancer: str | None = None
    # Users' WebSockets bind to 127.0.0.1 .. 127.0.0.N in turn: each source address has its own
    # ~28,000 ephemeral ports towards one destination, which one load balancer port needs.
    source_addresses: int = 1
    loss_grace_seconds: float = 5.0
    # Idle runs: the nodes' and services' CPU is also measured over the last this many seconds
    # of the chat alone, once the ramp's joins have been delivered and stored (0: not measured).
    hold_window_seconds: float = 0.0
    # End the loss grace as soon as the run has settled (chattrio/bot/settle.py): every user back
    # in its room, every SEND answered, every acknowledged message held. The grace is then only
    # the longest wait; off, it is always waited out, which leaves late duplicates time to show.
    until_settled: bool = False
    workers: int = 1
    max_loss: int = 0
    max_duplicates: int = 0
    max_out_of_order: int = 0
    # Users that lost their connection and never got a session back before leaving.
    max_not_resumed: int = 0
    max_p99_ms: float | None = None
    # Idle capacity runs: stop opening connections after the first refusal.
    stop_on_refusal: bool = False
    # Ask the nodes for several messages of a room in one MESSAGES frame (/ws?batch=1).
    batch_frames: bool = True
    # Node process pid files (same machine): their RSS is sampled for memory per connection,
    # and their CPU time (with their children's) for CPU per delivery and per connection.
    node_pid_files: list[str] = []
    # Pid files of the backing services (e.g. Kafka, PostgreSQL, Redis): their CPU time, with
    # their children's, is counted apart from the nodes'.
    service_pid_files: list[str] = []
    # The server under test: "chattrio", or "centrifugo" (chattrio/bot/centrifugo.py: its JSON
    # client protocol, users signed in with HS256 tokens made from `centrifugoSecret`).
    system: str = "chattrio"
    centrifugo_secret: str | None = None
    # chattrio in jwt mode (CHATTRIO_AUTH_MODE=jwt, HS256): the users sign their own tokens with
    # the nodes' secret, as an operator's identity service would, instead of signing in over REST.
    token_secret: str | None = None
    # A shell command run `execAtSeconds` after the chat starts (e.g. killing a node).
    exec_command: str | None = None
    exec_at_seconds: float = 10.0
    # Hostile users in the first room, each with its own connections sending as fast as the
    # nodes allow (chattrio/bot/flooder.py); the report's figures are the other users'.
    flooders: int = 0
    # Seconds of silence before the keepalive PING, and as long again for any answer before the
    # connection is dropped and resumed elsewhere; short in chaos runs, where a node may hang.
    # The node pings quiet sessions after CHATTRIO_PING_INTERVAL_SECONDS (25), so a keepalive
    # longer than that leaves liveness to the node (the idle scenario).
    keepalive_seconds: float = 20.0
    # Writes during the chat, spread over the nodes (chattrio/bot/writes.py): new users signing
    # up and new rooms created, each answer recorded for a chaos run's verdict.
    signups_per_second: float = 0.0
    room_creations_per_second: float = 0.0
    # Users entering a room of their own per second during the chat, and an observer noting their
    # "joined" messages and every room announced (chattrio/bot/presenceprobe.py): a chaos run's
    # measure of presence and the outbox lock after a Redis fault.
    presence_probes_per_second: float = 0.0
    # A JSON file that gets the run's records: every acknowledged message, the writes, the rooms
    # announced (scripts/chaos.sh checks them against PostgreSQL).
    records_file: str | None = None
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
        if not 0 <= self.hold_window_seconds <= self.chat_duration_seconds:
            problems.append("holdWindowSeconds must be 0 to chatDurationSeconds")
        if not 1 <= self.source_addresses <= 254:
            problems.append("sourceAddresses must be 1-254")
        if self.flooders < 0:
            problems.append("flooders must be >= 0")
        if self.keepalive_seconds <= 0:
            problems.append("keepaliveSeconds must be > 0")
        if min(self.signups_per_second, self.room_creations_per_second, self.presence_probes_per_second) < 0:
            problems.append("signupsPerSecond, roomCreationsPerSecond and presenceProbesPerSecond must be >= 0")
        if min(self.ramp_up_time_seconds, self.chat_duration_seconds, self.loss_grace_seconds) < 0:
            problems.append("durations must be >= 0")
        if not self.nodes and not self.rest_api_base_url:
            problems.append("give nodes (or restApiBaseUrl)")
        if self.metrics_urls and len(self.metrics_urls) != len(self.nodes or [self.rest_api_base_url]):
            problems.append("give one metricsUrl per node")
        if self.system not in SYSTEMS:
            problems.append(f"system must be one of {', '.join(SYSTEMS)}")
        if self.system == "centrifugo" and self.until_settled:
            problems.append("untilSettled is for chattrio: the Centrifugo users report nothing to settle on")
        if self.system == "centrifugo" and not self.centrifugo_secret:
            problems.append("system centrifugo needs centrifugoSecret (its client.token.hmac_secret_key)")
        if self.system == "centrifugo" and self.token_secret:
            problems.append("tokenSecret is for chattrio in jwt mode; Centrifugo's tokens use centrifugoSecret")
        if self.token_secret and (self.flooders or self.signups_per_second or self.presence_probes_per_second):
            problems.append("flooders, signups and presence probes sign in over REST: not with tokenSecret (jwt mode)")
        if problems:
            raise msgspec.ValidationError("; ".join(problems))

    def metrics_endpoints(self) -> list[Node]:
        if self.metrics_urls:
            return [Node.from_base_url(u) for u in self.metrics_urls]
        if self.system == "centrifugo":  # /metrics on its one port when no internal port is set
            return self.node_endpoints()
        return [
            Node.from_base_url(f"http://{node.host}:{node.port + INTERNAL_PORT_OFFSET}")
            for node in self.node_endpoints()
        ]

    def connect_endpoints(self) -> list[Node]:
        """Where users connect: the load balancer, or the nodes themselves."""
        if self.load_balancer:
            return [Node.from_base_url(self.load_balancer)]
        return self.node_endpoints()

    def source_address(self, user_index: int) -> str | None:
        """The loopback address user `user_index` connects from; None: the kernel's choice."""
        if self.source_addresses == 1:
            return None
        return f"127.0.0.{1 + user_index % self.source_addresses}"

    def node_endpoints(self) -> list[Node]:
        if self.nodes:
            return [Node.from_base_url(u, self._default_ws_url(u)) for u in self.nodes]
        assert self.rest_api_base_url is not None
        return [Node.from_base_url(self.rest_api_base_url, self.web_socket_endpoint)]

    def _default_ws_url(self, base_url: str) -> str | None:
        if self.system == "centrifugo":
            return f"ws://{urlsplit(base_url).netloc}{CENTRIFUGO_WS_PATH}"
        return None  # chattrio's /ws


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
    ("--via", "loadBalancer", str, "connect every user through this base URL (a load balancer before --node)"),
    ("--source-addresses", "sourceAddresses", int, "WebSockets bind to 127.0.0.1..127.0.0.N in turn"),
    ("--ws-url", "webSocketEndpoint", str, "WebSocket URL of that node"),
    ("--loss-grace", "lossGraceSeconds", float, "seconds to wait for late deliveries"),
    ("--hold-window", "holdWindowSeconds", float, "idle: also measure server CPU over the chat's last SECONDS"),
    ("--workers", "workers", int, "worker processes (users split, results merged)"),
    ("--max-loss", "maxLoss", int, "lost deliveries tolerated"),
    ("--max-duplicates", "maxDuplicates", int, "duplicate deliveries tolerated"),
    ("--max-out-of-order", "maxOutOfOrder", int, "out-of-order deliveries tolerated"),
    ("--max-not-resumed", "maxNotResumed", int, "users tolerated that lost their connection and never resumed"),
    ("--max-p99-ms", "maxP99Ms", float, "fail when end-to-end p99 exceeds this"),
    ("--exec", "execCommand", str, "shell command to run during the chat"),
    ("--flooders", "flooders", int, "hostile users flooding the first room during the chat"),
    ("--system", "system", str, "the server under test: chattrio (default) or centrifugo"),
    ("--centrifugo-secret", "centrifugoSecret", str, "centrifugo: the HS256 secret of its connection tokens"),
    ("--token-secret", "tokenSecret", str, "chattrio in jwt mode: users sign HS256 tokens with it (no REST sign-in)"),
    ("--exec-at", "execAtSeconds", float, "seconds after the chat start to run --exec"),
    ("--keepalive", "keepaliveSeconds", float, "seconds of silence before a PING, and then before giving up"),
    ("--signups", "signupsPerSecond", float, "new users signing up per second during the chat"),
    ("--room-creations", "roomCreationsPerSecond", float, "rooms created per second during the chat"),
    ("--presence-probes", "presenceProbesPerSecond", float, "users entering a probe room per second (chaos)"),
    ("--records", "recordsFile", str, "JSON file for the run's records (acked messages, writes, announcements)"),
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
        "--service-pid-file",
        action="append",
        dest="servicePidFiles",
        metavar="PATH",
        help="pid file of a backing service on this machine (repeatable): its CPU time is reported",
    )
    p.add_argument(
        "--stop-on-refusal",
        action="store_const",
        const=True,
        dest="stopOnRefusal",
        help="stop opening connections after the first refused one",
    )
    p.add_argument(
        "--until-settled",
        action="store_const",
        const=True,
        dest="untilSettled",
        help="end the loss grace once every user is back in its room with every SEND answered and every"
        " acknowledged message held (--loss-grace is then the longest wait)",
    )
    p.add_argument(
        "--no-batch-frames",
        action="store_const",
        const=False,
        dest="batchFrames",
        help="one ROOM_MESSAGE frame per message: do not ask for MESSAGES frames (/ws?batch=1)",
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
        cfg.connect_endpoints()
        cfg.metrics_endpoints()
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    return cfg
