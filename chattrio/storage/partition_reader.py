"""The fan-out's Kafka reader: every partition of the three topics, fetched over Trio sockets.

aiokafka's consumer spent about 2 ms of CPU per fetch cycle in Python, however few the records
(building the request, decoding the response, its fetcher's bookkeeping per partition), plus a
hop over the asyncio bridge and back; each node's fan-out runs about 40 cycles a second under
load. This reader speaks the three requests it needs itself (Metadata v1, ListOffsets v1,
Fetch v10) and leaves record batches to aiokafka's C parser: about 0.35 ms per cycle
(docs/decisions/fanout-kafka-reader.md).

No consumer group: the caller keeps the positions. At most one fetch is in flight per broker,
and a broker is fetched again only once the caller has taken what it returned, so a quiet
broker's long poll never holds up a busy one.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords

from chattrio.config import Settings
from chattrio.storage.kafka import (
    CONNECT_TIMEOUT,
    FETCH_LONG_POLL_MS,
    FetchedRecord,
    KafkaUnavailable,
    ReadBatch,
    decode_records,
)

log = logging.getLogger(__name__)

FETCH_MAX_BYTES = 50 * 1024 * 1024
PARTITION_MAX_BYTES = 1024 * 1024
READ_SIZE = 256 * 1024
# A broker answers a fetch within its long poll; this is how much later it may still answer.
RESPONSE_TIMEOUT = CONNECT_TIMEOUT
# A partition whose leader moved is fetched again after new metadata, at most this often.
METADATA_RETRY_BACKOFF = 0.2
# Fetch responses waiting for the caller; brokers beyond this many wait for room.
RESPONSES_BUFFERED = 16

_FETCH, _LIST_OFFSETS, _METADATA, _API_VERSIONS = 1, 2, 3, 18
# Fetch v10 is the oldest version a broker answers with zstd batches (older ones get error 76).
FETCH_VERSION, LIST_OFFSETS_VERSION, METADATA_VERSION = 10, 1, 1
REQUIRED_VERSIONS = {_FETCH: FETCH_VERSION, _LIST_OFFSETS: LIST_OFFSETS_VERSION, _METADATA: METADATA_VERSION}
_LATEST, _EARLIEST = -1, -2
_OFFSET_OUT_OF_RANGE = 1
# Errors after which the partition's leader may have moved: new metadata, then fetch again.
_LEADER_MOVED = frozenset({3, 5, 6, 9, 74, 75})  # unknown partition, no leader, not leader, epochs

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
# replica, max wait, min bytes, max bytes, isolation level, fetch session id and epoch (none: 0, -1)
_FETCH_HEAD = struct.Struct(">iiiibii")
# partition, current leader epoch (-1: unchecked), fetch offset, log start offset, partition max bytes
_FETCH_PARTITION = struct.Struct(">iiqqi")
# partition, error, high watermark, last stable offset, log start offset, aborted transactions count
_PARTITION_HEAD = struct.Struct(">ihqqqi")

Partition = tuple[str, int]


class KafkaIncompatible(Exception):
    """A broker does not serve a request version this reader speaks: a deployment error, not an outage."""


class _LeaderMoved(KafkaUnavailable):
    """A partition has no leader, or not the one asked: new metadata will tell."""


def _string(value: str) -> bytes:
    raw = value.encode()
    return _I16.pack(len(raw)) + raw


class _Cursor:
    """Reads a response's fields in order."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def int16(self) -> int:
        value: int = _I16.unpack_from(self.data, self.pos)[0]
        self.pos += 2
        return value

    def int32(self) -> int:
        value: int = _I32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return value

    def int64(self) -> int:
        value: int = _I64.unpack_from(self.data, self.pos)[0]
        self.pos += 8
        return value

    def string(self) -> str | None:
        size = self.int16()
        if size < 0:
            return None
        value = self.data[self.pos : self.pos + size].decode()
        self.pos += size
        return value

    def name(self) -> str:
        """A STRING the protocol never sends as null (topic names, hosts)."""
        value = self.string()
        if value is None:
            raise KafkaIncompatible("Kafka sent a null where its protocol has a name")
        return value

    def skip(self, size: int) -> None:
        self.pos += size


class _BrokerLink:
    """One connection to a broker, used for one request at a time.

    It drives a plain non-blocking socket with `wait_readable`/`wait_writable` rather than a
    SocketStream, whose `send_all` takes an extra pass through Trio's scheduler and whose
    `receive_some` fails a read before it waits: on a fetch cycle such steps cost more CPU than
    the cycle's own work (docs/decisions/kafka-fetch-cost.md).
    """

    def __init__(self, sock: socket.socket, client_id: str) -> None:
        self._sock = sock
        self._client_id = _string(client_id)
        self._correlation = 0
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, address: tuple[str, int], client_id: str) -> _BrokerLink:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(*address)
        except (OSError, trio.TooSlowError) as exc:
            raise KafkaUnavailable(f"Kafka broker {address[0]}:{address[1]} unreachable: {exc!r}") from exc
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        return cls(sock, client_id)

    async def request(self, api_key: int, version: int, body: bytes, timeout: float) -> _Cursor:
        """Send a request; the response's fields follow its correlation id."""
        self._correlation += 1
        header = _HEADER.pack(api_key, version, self._correlation) + self._client_id
        try:
            with trio.fail_after(timeout):
                await self._send_all(_I32.pack(len(header) + len(body)) + header + body)
                response = await self._receive()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            raise KafkaUnavailable(f"Kafka request {api_key} failed: {exc!r}") from exc
        cursor = _Cursor(response, 0)
        if cursor.int32() != self._correlation:
            raise KafkaUnavailable("Kafka answered another request than the one sent")
        return cursor

    async def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)

    async def _receive(self) -> bytes:
        buffer = self._buffer
        while len(buffer) < 4:
            await self._fill()
        (size,) = _I32.unpack_from(buffer)
        while len(buffer) < 4 + size:
            await self._fill()
        response = bytes(buffer[4 : 4 + size])
        del buffer[: 4 + size]
        return response

    async def _fill(self) -> None:
        # The answer is seldom there yet: wait before reading rather than fail a read first.
        await trio.lowlevel.wait_readable(self._sock)
        try:
            data = self._sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            raise trio.BrokenResourceError("the broker closed the connection")
        self._buffer += data

    async def aclose(self) -> None:
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        await trio.lowlevel.checkpoint()


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    addresses = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


class PartitionReader:
    """Reads every partition of the messages, events and typing topics from positions its caller
    keeps (see module doc)."""

    def __init__(self, settings: Settings, nursery: trio.Nursery) -> None:
        self._topics = (settings.messages_topic, settings.events_topic, settings.typing_topic)
        self._client_id = f"chattrio-fanout-{settings.node_id}"
        self._bootstrap = _addresses(settings.kafka_bootstrap)
        self._nursery = nursery
        self._positions: dict[Partition, int] = {}
        self._brokers: dict[int, tuple[str, int]] = {}
        self._leader_of: dict[Partition, int] = {}
        self._links: dict[int, _BrokerLink] = {}
        self._in_flight: set[int] = set()
        # Bumped when positions are set from outside: responses to older requests are dropped.
        self._generation = 0
        self._metadata_stale = False
        # Brokers whose last fetch failed: warned about once until one succeeds again.
        self._unreachable: set[int] = set()
        self._out_of_range: list[Partition] = []
        self._send_response, self._responses = trio.open_memory_channel[tuple[int, int, _Cursor | None]](
            RESPONSES_BUFFERED
        )

    # Assignment ---------------------------------------------------------------------------------

    async def assign_all(self, positions: dict[Partition, int]) -> int:
        """Read every partition of the topics, keeping known positions.

        New partitions are read from their beginning, known ones from `positions`, and the rest
        (first start) from the end. `positions` is updated to where reading starts. Returns the
        number of partitions assigned. While leadership moves (a new topic, a broker restart)
        it asks again, for at most CONNECT_TIMEOUT.
        """
        deadline = trio.current_time() + CONNECT_TIMEOUT
        while True:
            try:
                return await self._assign_all(positions)
            except _LeaderMoved:
                if trio.current_time() > deadline:
                    raise
                await trio.sleep(METADATA_RETRY_BACKOFF)

    async def _assign_all(self, positions: dict[Partition, int]) -> int:
        partitions = await self._refresh_metadata()
        # A topic created a moment ago (by this node or another) may not be in every broker's
        # metadata yet. Taking the partitions known so far would start the rest later, and from
        # their end: what was sent meanwhile would never reach this node's sessions.
        missing = [topic for topic in self._topics if not any(tp[0] == topic for tp in partitions)]
        if missing:
            raise _LeaderMoved(f"topic {missing[0]} not in the metadata yet")
        leaderless = [tp for tp in partitions if tp not in self._leader_of]
        if leaderless:
            raise _LeaderMoved(f"no leader for {len(leaderless)} partitions, e.g. {leaderless[0]}")
        if set(partitions) == set(self._positions):
            return len(partitions)
        unknown = [tp for tp in partitions if tp not in positions]
        starts = await self._list_offsets(unknown, _LATEST if not positions else _EARLIEST)
        self._positions = {tp: positions[tp] if tp in positions else starts[tp] for tp in partitions}
        positions.update(self._positions)
        self._generation += 1
        return len(partitions)

    async def lag(self, last_known: int) -> int:
        """Messages not fetched yet; `last_known` when the broker does not answer."""
        try:
            ends = await self._list_offsets(list(self._positions), _LATEST)
        except KafkaUnavailable as exc:
            log.warning("consumer lag unknown: %s", exc)
            return last_known
        return sum(max(0, ends[tp] - self._positions[tp]) for tp in ends if tp in self._positions)

    # Fetching -----------------------------------------------------------------------------------

    async def fetch(self, timeout: float) -> ReadBatch:
        """Records from every broker that answered, waiting at most about `timeout` for one."""
        if self._metadata_stale:
            await trio.sleep(METADATA_RETRY_BACKOFF)
            await self._refresh_metadata()
        if self._out_of_range:
            await self._reset_out_of_range()
        wait_ms = int(min(timeout * 1000, FETCH_LONG_POLL_MS))
        leaders = self._by_leader()
        batch = ReadBatch([], [], {})
        if len(leaders) == 1 and not self._in_flight:
            # One broker leads every partition: fetch in this task. A task and a channel per
            # fetch cost more CPU than the fetch itself (docs/decisions/kafka-fetch-cost.md).
            ((broker, partitions),) = leaders.items()
            request = self._fetch_request(partitions, wait_ms)
            self._take((broker, self._generation, await self._request_fetch(broker, request, wait_ms)), batch)
            return batch
        for broker, partitions in leaders.items():
            if broker not in self._in_flight:
                self._in_flight.add(broker)
                request = self._fetch_request(partitions, wait_ms)
                self._nursery.start_soon(self._fetch_from, broker, request, wait_ms, self._generation)
        if not self._in_flight:  # no partition has a leader right now
            await trio.sleep(timeout)
            return batch
        self._take(await self._responses.receive(), batch)
        while True:
            try:
                response = self._responses.receive_nowait()
            except trio.WouldBlock:
                return batch
            self._take(response, batch)

    def _by_leader(self) -> dict[int, list[Partition]]:
        leaders: dict[int, list[Partition]] = {}
        for tp in self._positions:
            broker = self._leader_of.get(tp)
            if broker is not None:
                leaders.setdefault(broker, []).append(tp)
        return leaders

    def _fetch_request(self, partitions: list[Partition], wait_ms: int) -> bytes:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        parts = [_FETCH_HEAD.pack(-1, wait_ms, 1, FETCH_MAX_BYTES, 0, 0, -1), _I32.pack(len(by_topic))]
        for topic, numbers in by_topic.items():
            parts += (_string(topic), _I32.pack(len(numbers)))
            parts += (
                _FETCH_PARTITION.pack(p, -1, self._positions[(topic, p)], -1, PARTITION_MAX_BYTES) for p in numbers
            )
        parts.append(_I32.pack(0))  # no forgotten topics (no fetch session)
        return b"".join(parts)

    async def _fetch_from(self, broker: int, request: bytes, wait_ms: int, generation: int) -> None:
        await self._send_response.send((broker, generation, await self._request_fetch(broker, request, wait_ms)))

    async def _request_fetch(self, broker: int, request: bytes, wait_ms: int) -> _Cursor | None:
        """Fetch from one broker; a broker that died answers None, so the next fetch asks for new
        metadata and reads its partitions from the leaders the cluster elects in its place."""
        try:
            link = await self._link(broker)
            try:
                response = await link.request(_FETCH, FETCH_VERSION, request, wait_ms / 1000 + RESPONSE_TIMEOUT)
            except BaseException:
                # Cancelled or failed mid-request, the link may still owe an answer: never reuse it.
                self._links.pop(broker, None)
                with trio.CancelScope(shield=True):
                    await link.aclose()
                raise
        except KafkaUnavailable as exc:
            if broker not in self._unreachable:
                log.warning(
                    "fan-out fetch failed, following the partitions' leaders",
                    extra={"broker": broker, "error": str(exc)},
                )
            self._unreachable.add(broker)
            self._metadata_stale = True
            return None
        self._unreachable.discard(broker)
        return response

    async def _link(self, broker: int) -> _BrokerLink:
        link = self._links.get(broker)
        if link is None:
            link = await _BrokerLink.connect(self._brokers[broker], self._client_id)
            try:
                await _check_versions(link, self._brokers[broker])
            except BaseException:
                await link.aclose()
                raise
            self._links[broker] = link
        return link

    def _take(self, response: tuple[int, int, _Cursor | None], batch: ReadBatch) -> None:
        broker, generation, cursor = response
        self._in_flight.discard(broker)
        if cursor is not None and generation == self._generation:
            self._parse_fetch(cursor, batch)

    def _parse_fetch(self, cursor: _Cursor, batch: ReadBatch) -> None:
        cursor.skip(4)  # throttle time
        error = cursor.int16()
        if error:
            raise KafkaUnavailable(f"Kafka fetch error {error}")
        cursor.skip(4)  # fetch session id
        for _ in range(cursor.int32()):
            topic = cursor.string()
            for _ in range(cursor.int32()):
                partition, error, _high, _stable, _start, aborted = _PARTITION_HEAD.unpack_from(cursor.data, cursor.pos)
                cursor.skip(_PARTITION_HEAD.size + 16 * max(aborted, 0))
                size = cursor.int32()
                records = cursor.data[cursor.pos : cursor.pos + size] if size > 0 else b""
                cursor.skip(max(size, 0))
                tp = (topic, partition)
                if tp not in self._positions:
                    continue
                if error:
                    self._partition_error(tp, error)
                elif records:
                    self._read_records(tp, records, batch)

    def _read_records(self, tp: Partition, records: bytes, batch: ReadBatch) -> None:
        position = self._positions[tp]
        taken: list[FetchedRecord] = []
        batches = MemoryRecords(records)
        try:
            while (record_batch := batches.next_batch()) is not None:
                if not record_batch.validate_crc():
                    raise KafkaUnavailable(f"corrupt record batch in {tp[0]}/{tp[1]} (CRC)")
                if not record_batch.is_control_batch:
                    taken += (record for record in record_batch if record.offset >= position)
                # A batch's last records may have been compacted away: its end, not its last record,
                # is where the next fetch starts.
                position = max(position, getattr(record_batch, "next_offset", 0), taken[-1].offset + 1 if taken else 0)
        except CorruptRecordException as exc:
            raise KafkaUnavailable(f"corrupt record batch in {tp[0]}/{tp[1]}: {exc}") from exc
        decode_records(tp[0], tp[1], taken, batch, self._topics)
        self._positions[tp] = position
        batch.positions[tp] = position

    def _partition_error(self, tp: Partition, error: int) -> None:
        if error == _OFFSET_OUT_OF_RANGE:
            self._out_of_range.append(tp)
        elif error in _LEADER_MOVED:
            self._metadata_stale = True  # fetched again from the leader the next metadata names
        else:
            raise KafkaUnavailable(f"Kafka fetch error {error} for {tp[0]}/{tp[1]}")

    async def _reset_out_of_range(self) -> None:
        """A position outside the log (the topic was recreated, or retention passed it): read on
        from the oldest record still there, so nothing that can still be read is skipped."""
        partitions, self._out_of_range = list(dict.fromkeys(self._out_of_range)), []
        try:
            starts = await self._list_offsets(partitions, _EARLIEST)
        except _LeaderMoved:
            self._out_of_range, self._metadata_stale = partitions, True
            return
        for tp, offset in starts.items():
            log.warning(
                "fan-out position out of range, reading from the oldest record",
                extra={"topic": tp[0], "partition": tp[1], "was": self._positions[tp], "now": offset},
            )
            self._positions[tp] = offset
        self._generation += 1

    # Metadata and offsets -----------------------------------------------------------------------

    async def _refresh_metadata(self) -> list[Partition]:
        """Learn brokers and leaders; returns the topics' partitions, with a leader or not."""
        body = _I32.pack(len(self._topics)) + b"".join(_string(topic) for topic in self._topics)
        cursor = await self._control_request(None, _METADATA, METADATA_VERSION, body)
        brokers = {}
        for _ in range(cursor.int32()):
            node = cursor.int32()
            host = cursor.name()
            brokers[node] = (host, cursor.int32())
            cursor.string()  # rack
        cursor.skip(4)  # controller
        partitions: list[Partition] = []
        leaders: dict[Partition, int] = {}
        for _ in range(cursor.int32()):
            topic_error = cursor.int16()
            topic = cursor.name()
            cursor.skip(1)  # internal
            for _ in range(cursor.int32()):
                cursor.skip(2)  # partition error: a missing leader says enough
                partition = cursor.int32()
                leader = cursor.int32()
                cursor.skip(4 * max(cursor.int32(), 0))  # replicas
                cursor.skip(4 * max(cursor.int32(), 0))  # in-sync replicas
                if topic_error:
                    continue
                partitions.append((topic, partition))
                if leader in brokers:
                    leaders[(topic, partition)] = leader
        self._brokers, self._leader_of = brokers, leaders
        self._metadata_stale = any(tp not in leaders for tp in self._positions)
        for broker in [b for b in self._links if b not in brokers]:
            await self._links.pop(broker).aclose()
        return sorted(partitions)

    async def _list_offsets(self, partitions: Iterable[Partition], which: int) -> dict[Partition, int]:
        """The end (_LATEST) or start (_EARLIEST) offset of each partition, from its leader."""
        by_leader: dict[int, dict[str, list[int]]] = {}
        for topic, partition in partitions:
            leader = self._leader_of.get((topic, partition))
            if leader is None:
                raise _LeaderMoved(f"no leader for {topic}/{partition}")
            by_leader.setdefault(leader, {}).setdefault(topic, []).append(partition)
        offsets: dict[Partition, int] = {}
        for leader, by_topic in by_leader.items():
            parts = [_I32.pack(-1), _I32.pack(len(by_topic))]
            for topic, numbers in by_topic.items():
                parts += (_string(topic), _I32.pack(len(numbers)))
                parts += (_I32.pack(p) + _I64.pack(which) for p in numbers)
            cursor = await self._control_request(leader, _LIST_OFFSETS, LIST_OFFSETS_VERSION, b"".join(parts))
            for _ in range(cursor.int32()):
                topic = cursor.name()
                for _ in range(cursor.int32()):
                    partition, error = cursor.int32(), cursor.int16()
                    cursor.skip(8)  # timestamp
                    offset = cursor.int64()
                    if error:
                        failure = _LeaderMoved if error in _LEADER_MOVED else KafkaUnavailable
                        raise failure(f"Kafka offsets error {error} for {topic}/{partition}")
                    offsets[(topic, partition)] = offset
        return offsets

    async def _control_request(self, broker: int | None, api_key: int, version: int, body: bytes) -> _Cursor:
        """A request on a connection of its own (fetch connections hold long polls); broker None:
        any broker that answers, the known ones first, then the bootstrap list."""
        candidates = [self._brokers[broker]] if broker is not None else [*self._brokers.values(), *self._bootstrap]
        failure: KafkaUnavailable | None = None
        for address in candidates:
            try:
                link = await _BrokerLink.connect(address, self._client_id)
                try:
                    return await link.request(api_key, version, body, CONNECT_TIMEOUT)
                finally:
                    await link.aclose()
            except KafkaUnavailable as exc:
                failure = exc
        raise failure or KafkaUnavailable("no Kafka broker known")

    async def check_versions(self) -> None:
        """Raise KafkaIncompatible, with what is missing, when the first broker that answers does
        not serve the versions this reader speaks; KafkaUnavailable when none answers."""
        failure: KafkaUnavailable | None = None
        for address in self._bootstrap:
            try:
                link = await _BrokerLink.connect(address, self._client_id)
            except KafkaUnavailable as exc:
                failure = exc
                continue
            try:
                return await _check_versions(link, address)
            finally:
                await link.aclose()
        raise failure or KafkaUnavailable("no Kafka bootstrap address")

    async def aclose(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.aclose()


async def _check_versions(link: _BrokerLink, address: tuple[str, int]) -> None:
    cursor = await link.request(_API_VERSIONS, 0, b"", CONNECT_TIMEOUT)
    error = cursor.int16()
    if error:
        raise KafkaIncompatible(f"Kafka broker {address[0]}:{address[1]} refused ApiVersions (error {error})")
    served: dict[int, tuple[int, int]] = {}
    for _ in range(cursor.int32()):
        api_key, low, high = cursor.int16(), cursor.int16(), cursor.int16()
        served[api_key] = (low, high)
    for api_key, version in REQUIRED_VERSIONS.items():
        low, high = served.get(api_key, (1, 0))  # not served: an empty range
        if not low <= version <= high:
            raise KafkaIncompatible(
                f"Kafka broker {address[0]}:{address[1]} does not serve request {api_key} version {version}"
                f" (it serves {'none' if low is None else f'{low}-{high}'}); the fan-out reader needs it"
            )


@asynccontextmanager
async def open_partition_reader(settings: Settings) -> AsyncIterator[PartitionReader]:
    async with trio.open_nursery() as nursery:
        reader = PartitionReader(settings, nursery)
        try:
            yield reader
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await reader.aclose()
