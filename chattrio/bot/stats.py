"""Counting: latency histograms, per-second timelines, and the delivery ledger.

Everything here is plain data that one worker fills and that the parent merges, so it has
`to_wire`/`from_wire` forms (JSON-friendly dicts) and an associative `merge`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Histogram: values in integer microseconds. Values below 2**SUB_BITS are exact; above, each
# power of two is split into 2**(SUB_BITS-1) buckets, so a bucket is at most 1/64 (1.6 %) wide.
SUB_BITS = 7
_SUB = 1 << SUB_BITS
_HALF = _SUB >> 1

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_of(value: int) -> int:
    if value < _SUB:
        return value if value > 0 else 0
    shift = value.bit_length() - SUB_BITS
    return _SUB + (shift - 1) * _HALF + ((value >> shift) - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) of the values that fall in bucket `index`."""
    if index < _SUB:
        return index, index + 1
    shift = (index - _SUB) // _HALF + 1
    mantissa = (index - _SUB) % _HALF + _HALF
    return mantissa << shift, (mantissa + 1) << shift


class Histogram:
    __slots__ = ("counts", "count", "total", "max", "min")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.max = 0
        self.min = 0

    def record(self, value: int) -> None:
        self.record_many((value,))

    def record_many(self, values: list[int] | tuple[int, ...]) -> None:
        """The receive path's entry: one call per batch of frames, the bucket maths inlined."""
        if not values:
            return
        counts = self.counts
        get = counts.get
        low = self.min if self.count else values[0]
        high = self.max
        total = 0
        for v in values:
            if v < _SUB:
                if v < 0:
                    v = 0  # clocks of one machine: a negative value is rounding, not time travel
                b = v
            else:
                shift = v.bit_length() - SUB_BITS
                b = (shift << (SUB_BITS - 1)) + (v >> shift)  # == bucket_of(v)
            counts[b] = get(b, 0) + 1
            total += v
            if v > high:
                high = v
            if v < low:
                low = v
        self.count += len(values)
        self.total += total
        self.max = high
        self.min = max(low, 0)

    def percentile(self, q: float) -> int:
        """The smallest recorded value v such that at least q % of values are <= v, to bucket
        precision (the bucket's midpoint, clamped to the exact min and max)."""
        if self.count == 0:
            return 0
        per_100k = round(q * 1000)  # integer maths: 99.9 % of 1000 must be exactly 999
        rank = max(1, -(-self.count * per_100k // 100_000))
        if rank >= self.count:
            return self.max
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                low, high = bucket_bounds(b)
                return min(max((low + high - 1) // 2, self.min), self.max)
        return self.max

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary_ms(self) -> dict[str, float]:
        out: dict[str, float] = {"count": self.count}
        for q in PERCENTILES:
            out[f"p{q:g}"] = round(self.percentile(q) / 1000, 3)
        out["max"] = round(self.max / 1000, 3)
        out["mean"] = round(self.mean() / 1000, 3)
        return out

    def merge(self, other: Histogram) -> None:
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        if other.count and (self.count == 0 or other.min < self.min):
            self.min = other.min
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def to_wire(self) -> dict:
        return {
            "counts": [[b, n] for b, n in sorted(self.counts.items())],
            "count": self.count,
            "total": self.total,
            "max": self.max,
            "min": self.min,
        }

    @classmethod
    def from_wire(cls, data: dict) -> Histogram:
        h = cls()
        h.counts = {b: n for b, n in data["counts"]}
        h.count, h.total, h.max, h.min = data["count"], data["total"], data["max"], data["min"]
        return h


class Timeline:
    """Counts, latency and the worst event-loop lag per whole second since the run's start (wall
    clock). The lag says when the bot itself stalled, which the lag histogram alone does not."""

    __slots__ = ("t0", "counts", "latency", "loop_lag_max")

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.counts: dict[str, list[int]] = {"sent": [], "acked": [], "delivered": []}
        self.latency: list[Histogram] = []
        self.loop_lag_max: list[int] = []  # microseconds, the worst of any worker

    def _second(self, now: float) -> int:
        return max(0, int(now - self.t0))

    def add(self, what: str, now: float, n: int = 1) -> None:
        series = self.counts[what]
        s = self._second(now)
        if s >= len(series):
            series.extend([0] * (s + 1 - len(series)))
        series[s] += n

    def note_loop_lag(self, now: float, lag_us: int) -> None:
        s = self._second(now)
        series = self.loop_lag_max
        if s >= len(series):
            series.extend([0] * (s + 1 - len(series)))
        series[s] = max(series[s], lag_us)

    def record_deliveries(self, now: float, latencies: list[int]) -> None:
        self.add("delivered", now, len(latencies))
        self.latency_at(now).record_many(latencies)

    def end_to_end(self) -> Histogram:
        whole = Histogram()
        for h in self.latency:
            whole.merge(h)
        return whole

    def latency_at(self, now: float) -> Histogram:
        s = self._second(now)
        if s >= len(self.latency):
            self.latency.extend(Histogram() for _ in range(s + 1 - len(self.latency)))
        return self.latency[s]

    def last_complete_second(self, now: float) -> Histogram:
        """The latencies recorded in the whole second before `now` (empty when there were none)."""
        s = self._second(now) - 1
        return self.latency[s] if 0 <= s < len(self.latency) else Histogram()

    def merge(self, other: Timeline) -> None:
        for what, series in other.counts.items():
            mine = self.counts.setdefault(what, [])
            if len(series) > len(mine):
                mine.extend([0] * (len(series) - len(mine)))
            for i, n in enumerate(series):
                mine[i] += n
        if len(other.latency) > len(self.latency):
            self.latency.extend(Histogram() for _ in range(len(other.latency) - len(self.latency)))
        for my_second, their_second in zip(self.latency, other.latency):
            my_second.merge(their_second)
        for s, lag_us in enumerate(other.loop_lag_max):
            self.note_loop_lag(self.t0 + s, lag_us)

    def to_wire(self) -> dict:
        return {
            "t0": self.t0,
            "counts": self.counts,
            "latency": [h.to_wire() for h in self.latency],
            "loopLagMax": self.loop_lag_max,
        }

    @classmethod
    def from_wire(cls, data: dict) -> Timeline:
        t = cls(data["t0"])
        t.counts = {k: list(v) for k, v in data["counts"].items()}
        t.latency = [Histogram.from_wire(h) for h in data["latency"]]
        t.loop_lag_max = list(data["loopLagMax"])
        return t


@dataclass(slots=True)
class SentMessage:
    room_id: int
    sent_at: float
    acked: bool = False
    ack_seq: int | None = None
    acked_at: float | None = None  # wall clock


@dataclass(slots=True)
class SeenMessage:
    """What the receivers of one worker saw of one bot message."""

    seq: int
    receivers: int = 0


class RoomMessageSeen:
    """One distinct ROOM_MESSAGE frame as the receive path needs it, decoded once per worker.
    `seen` and `sent_us` are None for messages not sent by this run (join/leave, other clients)."""

    __slots__ = ("room_id", "seq", "kind", "seen", "sent_us")

    def __init__(self, room_id: int, seq: int, kind: str, seen: SeenMessage | None, sent_us: int | None) -> None:
        self.room_id = room_id
        self.seq = seq
        self.kind = kind
        self.seen = seen
        self.sent_us = sent_us


@dataclass
class Ledger:
    """One worker's record of the run. Loss is only decided after merging every worker's
    ledger, because a receiver's messages may come from senders in other workers.

    Expected deliveries of an acknowledged message = the bot's users in its room whose
    subscription covers its seq, i.e. whose SUBSCRIBED.lastSeq is below it (null: all).
    """

    counters: dict[str, int] = field(default_factory=dict)
    sent: dict[str, SentMessage] = field(default_factory=dict)
    seen: dict[str, SeenMessage] = field(default_factory=dict)
    # room id -> the lastSeq of each member's first subscription (-1 for null)
    members: dict[int, list[int]] = field(default_factory=dict)
    ack: Histogram = field(default_factory=Histogram)
    # Per SEND written: until its ACK or ERROR, or until the connection it was written on was lost.
    answer_wait: Histogram = field(default_factory=Histogram)
    reconnect: Histogram = field(default_factory=Histogram)
    # When each user's session was ready (entered its room), µs since the run's t0: the last one
    # over the number of users is the connect rate.
    connected_at: Histogram = field(default_factory=Histogram)
    # How late the worker's event loop wakes a 100 ms sleep: high values mean the bot itself
    # (or a starved CPU) is distorting the figures.
    loop_lag: Histogram = field(default_factory=Histogram)
    timeline: Timeline = field(default_factory=lambda: Timeline(0.0))

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def to_wire(self) -> dict:
        return {
            "counters": self.counters,
            "sent": {k: [m.room_id, m.sent_at, m.acked, m.ack_seq, m.acked_at] for k, m in self.sent.items()},
            "seen": {k: [m.seq, m.receivers] for k, m in self.seen.items()},
            "members": {str(r): v for r, v in self.members.items()},
            "ack": self.ack.to_wire(),
            "answerWait": self.answer_wait.to_wire(),
            "reconnect": self.reconnect.to_wire(),
            "connectedAt": self.connected_at.to_wire(),
            "loopLag": self.loop_lag.to_wire(),
            "timeline": self.timeline.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: dict) -> Ledger:
        return cls(
            counters=dict(data["counters"]),
            sent={k: SentMessage(*v) for k, v in data["sent"].items()},
            seen={k: SeenMessage(*v) for k, v in data["seen"].items()},
            members={int(r): list(v) for r, v in data["members"].items()},
            ack=Histogram.from_wire(data["ack"]),
            answer_wait=Histogram.from_wire(data["answerWait"]),
            reconnect=Histogram.from_wire(data["reconnect"]),
            connected_at=Histogram.from_wire(data["connectedAt"]),
            loop_lag=Histogram.from_wire(data["loopLag"]),
            timeline=Timeline.from_wire(data["timeline"]),
        )

    def merge(self, other: Ledger) -> None:
        for k, n in other.counters.items():
            self.inc(k, n)
        self.sent.update(other.sent)  # client message ids are unique per sender, senders per worker
        for k, theirs in other.seen.items():
            mine = self.seen.get(k)
            if mine is None:
                self.seen[k] = SeenMessage(theirs.seq, theirs.receivers)
            elif mine.seq != theirs.seq:
                # Stored twice under two seqs: each copy the other worker saw is a duplicate.
                self.inc("duplicates", theirs.receivers)
            else:
                mine.receivers += theirs.receivers
        for room, seqs in other.members.items():
            self.members.setdefault(room, []).extend(seqs)
        self.ack.merge(other.ack)
        self.answer_wait.merge(other.answer_wait)
        self.reconnect.merge(other.reconnect)
        self.connected_at.merge(other.connected_at)
        self.loop_lag.merge(other.loop_lag)
        self.timeline.merge(other.timeline)


MAX_LOST_SAMPLES = 50


@dataclass(frozen=True)
class Delivery:
    expected: int
    delivered: int
    lost: int
    unexpected: int
    acked_lost_messages: int
    # (clientMsgId, room, seq, expected receivers, actual receivers) of the first messages with loss
    lost_samples: list[tuple[str, int, int | None, int, int]] = field(default_factory=list)


def settle(ledger: Ledger) -> Delivery:
    """Expected, delivered and lost deliveries of the acknowledged messages of a merged ledger.

    A message acknowledged but never seen by any receiver uses its ACK seq; one seen uses the
    seq receivers saw (a retried send may be ACKed with the seq of its first copy or another)."""
    sorted_members = {room: sorted(seqs) for room, seqs in ledger.members.items()}
    expected = delivered = lost = unexpected = acked_lost = 0
    samples: list[tuple[str, int, int | None, int, int]] = []
    for cmid, sent in ledger.sent.items():
        seen = ledger.seen.get(cmid)
        if not sent.acked:
            if seen is not None:
                unexpected += seen.receivers  # delivered although never acknowledged: not loss
            continue
        seq = seen.seq if seen is not None else sent.ack_seq
        members = sorted_members.get(sent.room_id, [])
        eligible = bisect.bisect_left(members, seq) if seq is not None else len(members)
        got = seen.receivers if seen is not None else 0
        expected += eligible
        delivered += min(got, eligible)
        unexpected += max(0, got - eligible)
        missing = max(0, eligible - got)
        lost += missing
        if missing:
            acked_lost += 1
            if len(samples) < MAX_LOST_SAMPLES:
                samples.append((cmid, sent.room_id, seq, eligible, got))
    return Delivery(expected, delivered, lost, unexpected, acked_lost, samples)
