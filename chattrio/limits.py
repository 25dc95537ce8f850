"""Rate limits: token buckets on Trio's clock, per connection, per user and per client address.

A bucket is two numbers updated when it is used; nothing runs in the background. A user's
buckets are shared by that user's sessions on this node; when the last of them ends they move
to a bounded LRU of idle users (so reconnecting does not refill them). The per-address buckets
are a bounded LRU too. docs/security.md describes every limit.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable

import trio

from chattrio.config import Rate, Settings
from chattrio.metrics import Counter, Registry

# Client addresses whose buckets are kept; the least recently used is forgotten beyond this
# (it starts full again: an attacker with this many addresses is not slowed by per-IP limits).
ADDRESS_BUCKETS = 100_000
# Refusals of a connection forgiven per second.
REFUSAL_FORGIVEN_PER_SECOND = 1.0
# Users whose last connection closed and whose buckets are kept (least recently closed forgotten
# first): a user closing all connections and opening new ones does not start with full buckets.
IDLE_USERS = 10_000

FRAME_KINDS = ("send", "subscribe", "ping", "other")


class TokenBucket:
    __slots__ = ("_rate", "_burst", "_tokens", "_stamp")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate, self._burst = rate.per_second, rate.burst
        self._tokens, self._stamp = rate.burst, now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there; 0 when one is there now."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate

    def take(self) -> None:
        """Take a token; call right after `wait` answered 0."""
        self._tokens -= 1


def take_all(buckets: Iterable[TokenBucket], now: float) -> float:
    """Take a token from every bucket, or from none: 0 when taken, else the seconds to wait."""
    buckets = list(buckets)
    wait = max(bucket.wait(now) for bucket in buckets)
    if wait == 0:
        for bucket in buckets:
            bucket.take()
    return wait


def retry_after_ms(wait: float) -> int:
    return max(1, math.ceil(wait * 1000))


def _bucket(buckets: dict[str, TokenBucket], kind: str, rate: Rate, now: float) -> TokenBucket:
    """The kind's bucket, made when first drawn from: a bucket never drawn from is full, so
    making it late changes nothing, and an idle session keeps none."""
    bucket = buckets.get(kind)
    if bucket is None:
        bucket = buckets[kind] = TokenBucket(rate, now)
    return bucket


class ConnectionLimits:
    """One session's buckets, and the refusals that end it."""

    __slots__ = ("user_id", "buckets", "_refusals", "_refusal_rate")

    def __init__(self, user_id: str, refusal_rate: Rate) -> None:
        self.user_id = user_id
        self.buckets: dict[str, TokenBucket] = {}
        self._refusals: TokenBucket | None = None
        self._refusal_rate = refusal_rate

    def refused(self, now: float) -> bool:
        """Count a refusal; True when the connection has had too many and is to be closed."""
        if self._refusals is None:
            self._refusals = TokenBucket(self._refusal_rate, now)
        if self._refusals.wait(now) > 0:
            return True
        self._refusals.take()
        return False


class FrameLimits:
    """The per-connection and per-user frame buckets of this node's sessions."""

    def __init__(self, settings: Settings, metrics: Registry) -> None:
        self._connection_rates = {kind: _rate(settings, kind, "connection") for kind in FRAME_KINDS}
        self._user_rates = {kind: _rate(settings, kind, "user") for kind in FRAME_KINDS}
        self._refusal_rate = Rate(REFUSAL_FORGIVEN_PER_SECOND, settings.refusals_before_close)
        self._users: dict[str, tuple[int, dict[str, TokenBucket]]] = {}  # user -> (sessions, buckets)
        self._idle: OrderedDict[str, dict[str, TokenBucket]] = OrderedDict()  # user -> buckets
        self.limited = metrics.counter(
            "chattrio_rate_limited_total", "Frames and requests refused by a rate limit, by kind", ["kind"]
        )
        self.closed = metrics.counter("chattrio_rate_limit_closes_total", "Sessions closed (1008) after many refusals")

    def open(self, user_id: str) -> ConnectionLimits:
        sessions, buckets = self._users.get(user_id, (0, None))
        if buckets is None:
            buckets = self._idle.pop(user_id, None)
        self._users[user_id] = (sessions + 1, {} if buckets is None else buckets)
        return ConnectionLimits(user_id, self._refusal_rate)

    def close(self, limits: ConnectionLimits) -> None:
        sessions, buckets = self._users[limits.user_id]
        if sessions <= 1:
            del self._users[limits.user_id]
            if buckets:  # none drawn from: full, nothing to remember
                self._idle[limits.user_id] = buckets
                if len(self._idle) > IDLE_USERS:
                    self._idle.popitem(last=False)
        else:
            self._users[limits.user_id] = (sessions - 1, buckets)

    def admit(self, limits: ConnectionLimits, kind: str) -> float:
        """0 when a frame of this kind may go on, else the seconds until it may (counted)."""
        now = trio.current_time()
        connection = _bucket(limits.buckets, kind, self._connection_rates[kind], now)
        user = _bucket(self._users[limits.user_id][1], kind, self._user_rates[kind], now)
        wait = take_all((connection, user), now)
        if wait:
            self.limited.inc(1, kind)
        return wait


class AddressLimits:
    """A bucket per client address for one kind of request (sign-up, room creation)."""

    def __init__(self, rate: Rate, kind: str, limited_counter: Counter) -> None:
        self._rate = rate
        self._kind = kind
        self._limited = limited_counter
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, address: str) -> float:
        now = trio.current_time()
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self._rate, now)
            if len(self._buckets) > ADDRESS_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        wait = take_all((bucket,), now)
        if wait:
            self._limited.inc(1, self._kind)
        return wait


def _rate(settings: Settings, kind: str, scope: str) -> Rate:
    rate: Rate = getattr(settings, f"{kind}_limit_per_{scope}")
    return rate


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str], setting: str) -> tuple[Network, ...]:
    """Addresses or CIDRs; raises ValueError naming the setting and the bad item (the node
    then fails at start with that reason)."""
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ValueError(f"CHATTRIO_{setting.upper()}: {exc}") from None


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then X-Forwarded-For
    is read from the right (each proxy appends the address it saw), skipping trusted proxies,
    and the first address not trusted is the client. Anything a client wrote further left is
    not believed."""
    address = peer
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    while hops and in_networks(address, trusted):
        address = hops.pop()
    return address
