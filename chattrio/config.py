"""Node configuration: environment variables, overridden by `serve` flags."""

from __future__ import annotations

import dataclasses
import os
import socket

PREFIX = "CHATTRIO_"


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
    # How long the producer waits to fill a batch: fewer, larger produce requests under load,
    # at this much added latency per message.
    kafka_linger_ms: int = 1
    secret: str = "dev-secret-change-me"
    token_ttl_seconds: int = 24 * 3600
    # Empty means: accept any Origin whose host equals the request's Host header.
    allowed_origins: tuple[str, ...] = ()
    web_root: str = ""
    max_connections: int = 20_000
    send_buffer_bytes: int = 1 << 20
    max_frame_bytes: int = 64 * 1024
    leave_grace_seconds: float = 15.0
    presence_ttl_seconds: float = 30.0
    shutdown_grace_seconds: float = 5.0
    # A session quiet this long is sent a WebSocket ping; one quiet for the timeout is closed.
    ping_interval_seconds: float = 25.0
    idle_timeout_seconds: float = 60.0
    log_json: bool = False
    log_level: str = "INFO"

    @property
    def messages_topic(self) -> str:
        return f"{self.topic_prefix}.messages"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"


# Field annotations are strings (postponed evaluation), so converters are keyed by them.
_CONVERTERS = {
    "int": int,
    "float": float,
    "str": str,
    "bool": lambda text: text.strip().lower() in {"1", "true", "yes", "on"},
    "tuple[str, ...]": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
}


def settings_from_env(environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Build settings from `CHATTRIO_<FIELD>` variables; explicit overrides win."""
    environ = os.environ if environ is None else environ
    values = {}
    for field in dataclasses.fields(Settings):
        raw = environ.get(PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = _convert(field.name, field.type, raw)
    values.update({name: value for name, value in overrides.items() if value is not None})
    return Settings(**values)


def _convert(name: str, type_hint: str, raw: str):
    converter = _CONVERTERS[type_hint]
    try:
        return converter(raw)
    except ValueError as exc:
        raise SystemExit(f"config error: {PREFIX}{name.upper()}={raw!r}: {exc}") from None
