"""Node configuration: environment variables, overridden by `serve` flags."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

PREFIX = "CHATTRIO_"
INTERNAL_PORT_OFFSET = 10_000
MAX_PACING_MS = 1_000


@dataclasses.dataclass(frozen=True)
class Rate:
    """A token bucket's shape: `per_second` tokens refill, at most `burst` are held.
    Written `RATE:BURST` in the environment, e.g. `10:100`."""

    per_second: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        rate, sep, burst = text.partition(":")
        if not sep:
            raise ValueError("expected RATE:BURST, e.g. 10:100")
        parsed = cls(float(rate), float(burst))
        if not (parsed.per_second > 0 and parsed.burst >= 1):
            raise ValueError("RATE must be > 0 and BURST >= 1")
        return parsed

    def __str__(self) -> str:
        return f"{self.per_second:g}:{self.burst:g}"


@dataclasses.dataclass(frozen=True)
class Settings:
    node_id: str = socket.gethostname()
    host: str = "127.0.0.1"
    port: int = 8080
    pg_dsn: str = "postgresql://chattrio:chattrio@127.0.0.1:55432/chattrio"
    redis_url: str = "redis://127.0.0.1:56379/0"
    kafka_bootstrap: str = "127.0.0.1:59092"
    topic_prefix: str = "chattrio"
    topic_partitions: int = 8
    topic_replication: int = 1
    # How long the producer waits to fill a batch, and how often at most the fan-out fetches.
    # Longer waits let a produce request, a fetch and each session's write carry more messages:
    # less CPU per message, up to this much more latency. The defaults are the lowest latency
    # with paced fetches; 10 and 20 cut the CPU per delivery but brought rooms' p99 to 38-52 ms,
    # against a 50 ms target (docs/decisions/latency-for-cpu.md). An interval of 0 fetches again
    # as soon as a fetch returns.
    kafka_linger_ms: int = 0
    fanout_interval_ms: int = 10
    # How long the typing topic keeps its records (they are never replayed; this only bounds
    # the disk they use). Applies when this node creates the topic.
    typing_retention_seconds: float = 60.0
    secret: str = "dev-secret-change-me"
    token_ttl_seconds: int = 24 * 3600
    # "open": log in by id alone, the node issues the token; "jwt": tokens come from the operator's
    # identity service and sign-up by id is off. docs/security.md.
    auth_mode: str = "open"
    # Accepts the public default secret (or a short one): for a local run only.
    dev_mode: bool = False
    # jwt mode: HS256 (the shared `secret`), RS256 or ES256 (the public keys of `jwks_file`).
    jwt_algorithm: str = "HS256"
    jwks_file: str = ""
    # jwt mode: when set, a token must carry this `iss` / `aud`.
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # Empty means: accept any Origin whose host equals the request's Host header.
    allowed_origins: tuple[str, ...] = ()
    web_root: str = ""
    max_connections: int = 20_000
    send_buffer_bytes: int = 1 << 20
    max_frame_bytes: int = 64 * 1024
    leave_grace_seconds: float = 15.0
    presence_ttl_seconds: float = 30.0
    shutdown_grace_seconds: float = 5.0
    # Limits (docs/security.md): token buckets per connection and per user for each kind
    # of client frame; per user means the user's sessions on this node together.
    send_limit_per_connection: Rate = Rate(5, 20)
    send_limit_per_user: Rate = Rate(5, 20)
    subscribe_limit_per_connection: Rate = Rate(10, 50)
    subscribe_limit_per_user: Rate = Rate(20, 100)
    ping_limit_per_connection: Rate = Rate(5, 20)
    ping_limit_per_user: Rate = Rate(10, 40)
    other_limit_per_connection: Rate = Rate(5, 50)
    other_limit_per_user: Rate = Rate(10, 100)
    # Refusals a connection may collect (one is forgiven per second) before it is closed with 1008.
    refusals_before_close: int = 100
    max_connections_per_user: int = 20
    signup_limit_per_ip: Rate = Rate(0.5, 30)
    room_create_limit_per_ip: Rate = Rate(0.2, 20)
    room_quota_per_user: int = 100
    # Rooms one session may be subscribed to at once; each costs fan-out and presence work.
    max_rooms_per_session: int = 128
    # Peers (addresses or CIDRs) whose X-Forwarded-For names the client, e.g. the load balancer.
    trusted_proxies: tuple[str, ...] = ()
    # Client addresses (or CIDRs) exempt from the per-IP limits and the room quota (a load bot).
    limit_exempt: tuple[str, ...] = ()
    unknown_room_cache_seconds: float = 2.0
    # A session quiet this long is sent a WebSocket ping; one quiet for the timeout is closed.
    ping_interval_seconds: float = 25.0
    idle_timeout_seconds: float = 60.0
    log_json: bool = False
    log_level: str = "INFO"
    # /metrics and the detailed /readyz listen here, not on the public port; 0 means
    # port + INTERNAL_PORT_OFFSET, so several nodes on one host never collide.
    internal_host: str = "127.0.0.1"
    internal_port: int = 0
    # Connections still speaking plain HTTP (not WebSocket sessions); more are answered 503.
    # Each holds at most one response while writing it (the web client script: ~0.5 MB).
    max_http_connections: int = 512
    # Test only: /ws-echo echoes every WebSocket message, without auth (tests/transport/test_autobahn.py).
    test_echo: bool = False

    @property
    def internal_port_number(self) -> int:
        return self.internal_port or self.port + INTERNAL_PORT_OFFSET

    @property
    def messages_topic(self) -> str:
        return f"{self.topic_prefix}.messages"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def typing_topic(self) -> str:
        return f"{self.topic_prefix}.typing"


# Field annotations are strings (postponed evaluation), so converters are keyed by them.
_CONVERTERS: dict[str, Callable[[str], object]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": lambda text: text.strip().lower() in {"1", "true", "yes", "on"},
    "tuple[str, ...]": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
    "Rate": Rate.parse,
}


def settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from `CHATTRIO_<FIELD>` variables; explicit overrides win."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        raw = environ.get(PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = _convert(field.name, str(field.type), raw)
    values.update({name: value for name, value in overrides.items() if value is not None})
    settings = Settings(**values)
    _check_liveness(settings)
    _check_pacing(settings)
    return settings


def _check_liveness(settings: Settings) -> None:
    # A session must get at least one ping before silence closes it, or a quiet but healthy
    # client would be cut off without a chance to answer.
    if 0 < settings.ping_interval_seconds and settings.idle_timeout_seconds <= settings.ping_interval_seconds:
        raise SystemExit(
            f"config error: {PREFIX}IDLE_TIMEOUT_SECONDS={settings.idle_timeout_seconds:g} must be longer than "
            f"{PREFIX}PING_INTERVAL_SECONDS={settings.ping_interval_seconds:g}"
        )


def _check_pacing(settings: Settings) -> None:
    # Beyond a second the waits would read like an outage to the users of a busy room.
    for name in ("kafka_linger_ms", "fanout_interval_ms"):
        value = getattr(settings, name)
        if not 0 <= value <= MAX_PACING_MS:
            raise SystemExit(f"config error: {PREFIX}{name.upper()}={value} must be 0-{MAX_PACING_MS}")


def _convert(name: str, type_hint: str, raw: str) -> object:
    converter = _CONVERTERS[type_hint]
    try:
        return converter(raw)
    except ValueError as exc:
        raise SystemExit(f"config error: {PREFIX}{name.upper()}={raw!r}: {exc}") from None
