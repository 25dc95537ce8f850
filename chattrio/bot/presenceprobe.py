"""Presence and the outbox during a chaos run: how soon after a fault does a user entering a room
produce its "joined" message again, and a new room get announced again?

Both depend on Redis: presence lives there, and only the holder of the outbox lock publishes new
rooms. An observer stays in a room of its own, subscribed to room announcements too. Every
`interval` a probe user who was never in that room enters it on a new connection (to the nodes in
turn), and stays until the observer saw the user's "joined" message (or for HOLD): a connection
that leaves before its node recorded the entry makes no message at all. Each user enters once, so
each entry makes at most one "joined" message. The observer notes when each one arrives, and when each room is first
announced. scripts/ha/chaos.py turns that into the seconds until presence and the outbox worked
again after the fault.
"""

from __future__ import annotations

import time

import msgspec
import trio

from chattrio.bot import frames
from chattrio.bot.config import Node
from chattrio.bot.http import HttpPool, setup_request
from chattrio.bot.ws import WsConnection, WsError

CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 5.0
# How long a probe user stays in the room waiting for its "joined" message: longer than a Redis
# failover, so an entry made during the outage can still be announced once presence is back.
HOLD = 30.0
_GONE = (WsError, OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError)
_decode = frames.server_decoder.decode


class _Refused(Exception):
    """The node answered the probe's SUBSCRIBE with an ERROR."""


class PresenceProbe:
    def __init__(self, nodes: list[Node], run_id: str, user_prefix: str) -> None:
        self.nodes = nodes
        self.observer = f"{user_prefix}pobs{run_id}"
        self.user_prefix = f"{user_prefix}p{run_id}x"
        self.room_id: int | None = None
        self._topic = ""  # the room's destination, once set up
        self._tokens: dict[str, str] = {}
        # what chaos.py reads: one record per entry, the joins and the announcements seen
        self.entries: list[dict] = []
        self.joins: dict[str, float] = {}  # probe user -> when the observer got the "joined" message
        self._joined: dict[str, trio.Event] = {}
        self.announced: dict[int, float] = {}  # room id -> when the observer first got ROOM_CREATED
        self.observer_errors: list[str] = []

    def records(self) -> dict:
        return {
            "roomId": self.room_id,
            "entries": self.entries,
            "joins": self.joins,
            "announced": self.announced,
            "observerErrors": self.observer_errors,
        }

    async def set_up(self, probes: int) -> None:
        """Before the chat, while everything is healthy: sign every probe user up (a probe must not
        depend on PostgreSQL), on the nodes in turn, and create the observer's room."""
        pools = [HttpPool(node, size=2) for node in self.nodes]
        try:
            users = [self.observer] + [f"{self.user_prefix}{k}" for k in range(probes)]
            for k, user_id in enumerate(users):
                body = await _set_up_request(pools[k % len(pools)], f"/api/user/enter/{user_id}")
                self._tokens[user_id] = body["data"]["token"]
            name = {"name": f"{self.user_prefix}room"}
            body = await _set_up_request(pools[0], "/api/room", name, self._tokens[self.observer])
            self.room_id = body["data"]["id"]
            self._topic = frames.room_topic(self.room_id)
        finally:
            for pool in pools:
                await pool.aclose()

    async def run(self, interval: float, start: float, end: float, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Probes enter between `start` and `end` (trio clock); the observer stays until the last
        probe's "joined" message had time to come."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._observe)
            task_status.started()
            k = 0
            while (due := start + k * interval) < end and f"{self.user_prefix}{k}" in self._tokens:
                await trio.sleep_until(due)
                nursery.start_soon(self._enter, k)
                k += 1
            await trio.sleep(ANSWER_TIMEOUT * 2)  # the last joins on their way
            nursery.cancel_scope.cancel()

    async def _observe(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The observer's connection, opened again (to the next node) whenever it is lost."""
        started = False
        attempt = 0
        while True:
            node = self.nodes[attempt % len(self.nodes)]
            attempt += 1
            try:
                conn = await WsConnection.connect(
                    node.ws_host, node.ws_port, node.ws_path, CONNECT_TIMEOUT, self._tokens[self.observer]
                )
                try:
                    await _subscribe(conn, frames.ROOMS_TOPIC, self._note)
                    await _subscribe(conn, self._topic, self._note)
                    if not started:
                        task_status.started()
                        started = True
                    await self._note_frames(conn)
                finally:
                    await conn.aclose_now()
            except _GONE as exc:
                if not started:
                    raise
                self.observer_errors.append(f"{time.time():.3f} {node.base_url}: {type(exc).__name__}: {exc}"[:200])
                await trio.sleep(0.5)

    async def _note_frames(self, conn: WsConnection) -> None:
        while True:
            for payload in await conn.receive():
                self._note(_decode(payload))

    def _note(self, frame) -> None:
        now = time.time()
        if isinstance(frame, frames.RoomCreated):
            room_id = frame.room.get("id")
            if isinstance(room_id, int):
                self.announced.setdefault(room_id, now)
        if isinstance(frame, frames.RoomMessage):
            messages = [frame.message]
        elif isinstance(frame, frames.Messages):
            messages = frame.messages
        else:
            return
        for message in messages:
            if message.kind == "join" and message.roomId == self.room_id:
                self.joins.setdefault(message.senderId, now)
                self._joined.setdefault(message.senderId, trio.Event()).set()

    async def _enter(self, k: int) -> None:
        user_id = f"{self.user_prefix}{k}"
        node = self.nodes[k % len(self.nodes)]
        entry: dict = {"user": user_id, "node": node.base_url, "at": time.time()}
        self.entries.append(entry)
        try:
            conn = await WsConnection.connect(
                node.ws_host, node.ws_port, node.ws_path, CONNECT_TIMEOUT, self._tokens[user_id]
            )
            try:
                await _subscribe(conn, self._topic)
                entry["enteredAt"] = time.time()
                with trio.move_on_after(HOLD):
                    await self._joined.setdefault(user_id, trio.Event()).wait()
            finally:
                await conn.aclose_now()
        except (*_GONE, _Refused) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:200]


async def _set_up_request(pool: HttpPool, path: str, body: object | None = None, token: str | None = None) -> dict:
    """A POST that must succeed; a per-IP limit (429) or a busy node (503) is waited out."""
    response = await setup_request(pool, "POST", path, body, token, retry_statuses=(429, 503))
    if response.status not in (200, 201):
        raise RuntimeError(f"presence probe: POST {path} answered {response.status}")
    return msgspec.json.decode(response.body)


async def _subscribe(conn: WsConnection, destination: str, note=lambda frame: None) -> None:
    """SUBSCRIBE and wait for its answer; `note` gets the frames that come before it."""
    await conn.send_text(frames.client_encoder.encode(frames.Subscribe(destination, ref="probe")))
    with trio.fail_after(ANSWER_TIMEOUT):
        while True:
            for payload in await conn.receive():
                frame = _decode(payload)
                if isinstance(frame, frames.Subscribed) and frame.ref == "probe":
                    return
                if isinstance(frame, frames.Error) and frame.ref == "probe":
                    raise _Refused(f"{frame.code}: {frame.message}")
                note(frame)
