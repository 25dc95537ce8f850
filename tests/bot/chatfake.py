"""An in-process fake of a few chattrio nodes, enough of docs/protocol.md for the bot's own tests
(login, rooms, /metrics, SUBSCRIBE with since, SEND/ACK with clientMsgId dedup, PING), built on
wsproto so that the bot's hand-written client meets an independent implementation.

Faults on demand: `kill(node)` drops every connection of a node and refuses new ones;
`drop_next`/`duplicate_next` lose or double the next delivery to a given user;
`unavailable_next` answers a user's next room SUBSCRIBE with ERROR UNAVAILABLE, `too_long_next`
with ERROR REPLAY_TOO_LONG (the history is then served by `GET /api/room/{id}/messages`);
`hang(node)` makes a node a hung process: its connections stay open and nothing answers.
A room created is announced (ROOM_CREATED) to the clients watching /topic/rooms, twice while
`announce_twice` is set.

A room SUBSCRIBE (its replay, SUBSCRIBED and lastSeq) is one step between two stored messages,
as on a real node: a message is either replayed or delivered live, never both or neither, and
a first SUBSCRIBED's lastSeq is exactly what the client will not get. `deliveries` counts the
clients each message was written to, for a test to hold the bot's expectations against.
`serve(..., ping_every=s)` makes the live nodes ping every client that often (a real node pings
every 25 s): a live connection is then never silent for long, a hung node's always is.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

import trio
from wsproto import ConnectionState, ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Ping, Request, TextMessage


@dataclass(eq=False)  # identity hash: clients live in sets
class _Client:
    user_id: str
    stream: trio.SocketStream
    ws: WSConnection
    rooms: set[int] = field(default_factory=set)
    watches_rooms: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)

    async def send(self, frame: dict) -> bool:
        return await self.write(TextMessage(data=json.dumps(frame)))

    async def write(self, event: Event) -> bool:
        """Every frame after the handshake goes out here, one at a time (a ping's answer never
        lands inside another frame), and once the closing handshake has begun only its answer.
        Whether it was written."""
        async with self.lock:
            if self.ws.state is not ConnectionState.OPEN and not isinstance(event, CloseConnection):
                return False
            await self.stream.send_all(self.ws.send(event))
            return True


class FakeChat:
    def __init__(self) -> None:
        self.rooms: dict[int, list[dict]] = {}
        self.room_names: dict[int, str] = {}
        self.next_seq = 100
        self.stored: dict[tuple[str, str], dict] = {}
        self.clients: dict[int, set[_Client]] = {}  # node index -> open clients
        self.dead: set[int] = set()
        self.hung: set[int] = set()
        self.announce_twice = False
        self.drop_next: set[str] = set()
        self.duplicate_next: set[str] = set()
        self.unavailable_next: set[str] = set()
        self.too_long_next: set[str] = set()
        self.history_requests = 0
        self.room_subscribes: list[tuple[str, int | None]] = []  # (user, since) of each room SUBSCRIBE
        self.deliveries: Counter[int] = Counter()  # seq -> clients it was written to (live or replayed)
        # (rooms created freely, clients watching /topic/rooms): once that many rooms exist, a room
        # creation waits for that many watchers, so that its announcement reaches them however
        # slowly they joined (the first rooms are the run's own, created before any user).
        self.rooms_wait_for_watchers: tuple[int, int] | None = None
        self.urls: list[str] = []
        self._order = trio.Lock()

    async def serve(self, nursery: trio.Nursery, nodes: int, ping_every: float | None = None) -> None:
        for i in range(nodes):
            listeners = await nursery.start(partial(trio.serve_tcp, partial(self._handle, i), 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            self.urls.append(f"http://127.0.0.1:{port}")
            self.clients[i] = set()
        if ping_every is not None:
            nursery.start_soon(self._ping_every, ping_every)

    async def _ping_every(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            for node, clients in self.clients.items():
                if node in self.hung or node in self.dead:
                    continue
                for client in list(clients):
                    try:
                        await client.write(Ping(b"fake"))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        clients.discard(client)

    async def kill(self, node: int) -> None:
        self.dead.add(node)
        for client in list(self.clients[node]):
            await client.stream.aclose()

    def hang(self, node: int) -> None:
        self.hung.add(node)

    async def _hang_if_hung(self, node: int) -> None:
        if node in self.hung:
            await trio.sleep_forever()

    # -- HTTP ---------------------------------------------------------------------------------

    async def _handle(self, node: int, stream: trio.SocketStream) -> None:
        try:
            while True:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    head += chunk
                if node in self.dead:
                    return
                await self._hang_if_hung(node)
                if b"upgrade: websocket" in head.lower():
                    await self._websocket(node, stream, head)
                    return
                await self._rest(stream, head)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _rest(self, stream: trio.SocketStream, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ")
        length = next(
            (int(v) for k, _, v in (line.partition(": ") for line in lines[1:]) if k.lower() == "content-length"), 0
        )
        while len(body) < length:
            body += await stream.receive_some(65536)
        data: object  # the JSON answer: an object, or a list (pages of messages)
        if method == "POST" and path.startswith("/api/user/enter/"):
            user = path.rsplit("/", 1)[1]
            status, data = 201, {"userId": user, "token": f"tok-{user}", "expiresAt": 0, "created": True}
        elif method == "POST" and path == "/api/room":
            if self.rooms_wait_for_watchers is not None and len(self.rooms) >= self.rooms_wait_for_watchers[0]:
                while self._watchers() < self.rooms_wait_for_watchers[1]:
                    await trio.sleep(0.01)
            room_id = len(self.rooms) + 1
            self.rooms[room_id] = []
            self.room_names[room_id] = json.loads(body)["name"]
            status, data = (
                201,
                {"id": room_id, "name": self.room_names[room_id], "createdBy": "x", "createdAt": "", "memberCount": 0},
            )
            for _ in range(2 if self.announce_twice else 1):
                await self._announce(data)
        elif method == "GET" and path.startswith("/api/room/") and "/messages" in path:
            status, data = 200, self._history(path)
        elif method == "GET" and path.startswith("/api/room?"):
            status, data = 200, self._room_page(urllib.parse.parse_qs(path.partition("?")[2]))
        elif method == "GET" and path == "/metrics":
            text = f"# TYPE fake_connections gauge\nfake_connections {sum(map(len, self.clients.values()))}\n"
            await stream.send_all(f"HTTP/1.1 200 OK\r\nContent-Length: {len(text)}\r\n\r\n{text}".encode())
            return
        else:
            status, data = 404, None
        payload = json.dumps({"success": status < 300, "message": "", "data": data})
        await stream.send_all(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n{payload}".encode()
        )

    def _watchers(self) -> int:
        return sum(client.watches_rooms for clients in self.clients.values() for client in clients)

    def _history(self, path: str) -> list[dict]:
        """GET /api/room/{id}/messages?limit=&before=: newest first."""
        self.history_requests += 1
        route, _, query = path.partition("?")
        params = dict(part.split("=") for part in query.split("&") if part)
        log = self.rooms[int(route.split("/")[3])]
        before = int(params["before"]) if "before" in params else None
        older = [m for m in log if before is None or m["seq"] < before]
        return older[-int(params.get("limit", 50)) :][::-1]

    def _room_page(self, query: dict[str, list[str]]) -> dict:
        """GET /api/room's paging: newest first, names containing q, ids below the cursor."""
        limit = int(query["limit"][0])
        below = int(query["cursor"][0]) if "cursor" in query else len(self.rooms) + 1
        ids = [
            i
            for i in sorted(self.room_names, reverse=True)
            if i < below and query["q"][0].lower() in self.room_names[i].lower()
        ]
        page = [
            {"id": i, "name": self.room_names[i], "createdBy": "x", "createdAt": "", "memberCount": 0}
            for i in ids[:limit]
        ]
        more = len(ids) > limit
        return {"rooms": page, "nextCursor": str(ids[limit - 1]) if more else None, "hasMore": more}

    # -- WebSocket ----------------------------------------------------------------------------

    async def _websocket(self, node: int, stream: trio.SocketStream, head: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(head)
        client: _Client | None = None
        try:
            while True:
                for event in ws.events():
                    if isinstance(event, Request):
                        token = dict(event.extra_headers).get(b"authorization", b"").decode().removeprefix("Bearer ")
                        await stream.send_all(ws.send(AcceptConnection()))
                        client = _Client(token.removeprefix("tok-"), stream, ws)
                        self.clients[node].add(client)
                    elif isinstance(event, TextMessage) and client is not None:
                        await self._frame(client, json.loads(event.data))
                    elif isinstance(event, Ping | CloseConnection):
                        assert client is not None  # the upgrade request is the first event
                        await client.write(event.response())
                        if isinstance(event, CloseConnection):
                            return
                data = await stream.receive_some(65536)
                if not data:
                    return
                await self._hang_if_hung(node)
                ws.receive_data(data)
        finally:
            if client is not None:
                self.clients[node].discard(client)

    async def _frame(self, client: _Client, frame: dict) -> None:
        kind, ref = frame["type"], frame.get("ref")
        if kind == "SUBSCRIBE":
            dest = frame["destination"]
            if dest == "/topic/rooms":
                client.watches_rooms = True
                await client.send({"type": "SUBSCRIBED", "ref": ref, "destination": dest, "lastSeq": None})
                return
            room = int(dest.rsplit("/", 1)[1])
            self.room_subscribes.append((client.user_id, frame.get("since")))
            if client.user_id in self.unavailable_next:
                self.unavailable_next.discard(client.user_id)
                await client.send({"type": "ERROR", "code": "UNAVAILABLE", "message": "retry", "ref": ref})
                return
            if client.user_id in self.too_long_next and frame.get("since") is not None:
                self.too_long_next.discard(client.user_id)
                await client.send({"type": "ERROR", "code": "REPLAY_TOO_LONG", "message": "use REST", "ref": ref})
                return
            # No message is stored meanwhile: one stored during the replay (or between lastSeq and
            # joining the room) would otherwise reach the client twice, or live below its lastSeq.
            async with self._order:
                log = self.rooms[room]
                if frame.get("since") is not None:
                    for message in log:
                        if message["seq"] > frame["since"]:
                            if await client.send({"type": "ROOM_MESSAGE", "message": message}):
                                self.deliveries[message["seq"]] += 1
                client.rooms.add(room)
                await client.send(
                    {"type": "SUBSCRIBED", "ref": ref, "destination": dest, "lastSeq": log[-1]["seq"] if log else None}
                )
        elif kind == "UNSUBSCRIBE":
            client.rooms.discard(int(frame["destination"].rsplit("/", 1)[1]))
            await client.send({"type": "UNSUBSCRIBED", "ref": ref, "destination": frame["destination"]})
        elif kind == "PING":
            await client.send({"type": "PONG", "ref": ref})
        elif kind == "SEND":
            room, cmid = frame["roomId"], frame["clientMsgId"]
            if room not in client.rooms:
                await client.send({"type": "ERROR", "code": "NOT_SUBSCRIBED", "message": "enter first", "ref": ref})
                return
            async with self._order:  # one message at a time keeps every receiver in seq order
                message = await self._store(client, room, cmid, frame["text"])
            await client.send(
                {
                    "type": "ACK",
                    "ref": ref,
                    "clientMsgId": cmid,
                    "id": message["id"],
                    "roomId": room,
                    "seq": message["seq"],
                }
            )

    async def _store(self, client: _Client, room: int, cmid: str, text: str) -> dict:
        message = self.stored.get((client.user_id, cmid))
        if message is None:
            self.next_seq += 3  # seqs are not contiguous in the real server either
            message = {
                "id": f"id-{self.next_seq}",
                "roomId": room,
                "seq": self.next_seq,
                "senderId": client.user_id,
                "kind": "chat",
                "text": text,
                "clientMsgId": cmid,
                "sentAt": 0,
            }
            self.stored[(client.user_id, cmid)] = message
            self.rooms[room].append(message)
            await self._broadcast(room, message)
        return message

    async def _announce(self, room: dict) -> None:
        for node, clients in self.clients.items():
            for client in list(clients):
                if client.watches_rooms and node not in self.hung:
                    try:
                        await client.send({"type": "ROOM_CREATED", "room": room})
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        clients.discard(client)

    async def _broadcast(self, room: int, message: dict) -> None:
        for node, clients in self.clients.items():
            for other in list(clients):
                if room not in other.rooms or node in self.hung:
                    continue
                if other.user_id in self.drop_next:
                    self.drop_next.discard(other.user_id)
                    continue
                copies = 2 if other.user_id in self.duplicate_next else 1
                self.duplicate_next.discard(other.user_id)
                for _ in range(copies):
                    try:
                        if await other.send({"type": "ROOM_MESSAGE", "message": message}):
                            self.deliveries[message["seq"]] += 1
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        clients.discard(other)
