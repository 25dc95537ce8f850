"""A protocol client for tests: REST via httpx, WebSocket via trio-websocket, frames recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
    open_websocket_url,
)

DEFAULT_TIMEOUT = 15.0


async def login(base_url: str, user_id: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.post(f"/api/user/enter/{user_id}")
        response.raise_for_status()
        return response.json()["data"]["token"]


async def create_room(base_url: str, token: str, name: str) -> dict:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.post("/api/room", json={"name": name}, headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        return response.json()["data"]


class ChatClient:
    def __init__(self, ws, user_id: str) -> None:
        self.ws = ws
        self.user_id = user_id
        self.frames: list[dict] = []
        self.closed: ConnectionClosed | None = None
        self._changed = trio.Event()

    async def _read(self) -> None:
        try:
            while True:
                self.frames.append(json.loads(await self.ws.get_message()))
                self._changed.set()
                self._changed = trio.Event()
        except ConnectionClosed as exc:
            self.closed = exc
            self._changed.set()

    async def send(self, **frame) -> None:
        await self.ws.send_message(json.dumps(frame))

    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float = DEFAULT_TIMEOUT) -> dict:
        with trio.fail_after(timeout):
            seen = 0
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                if self.closed is not None:
                    raise AssertionError(f"connection closed while waiting: {self.closed}")
                await self._changed.wait()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT) -> None:
        with trio.fail_after(timeout):
            while not condition():
                if self.closed is not None:
                    raise AssertionError(f"connection closed while waiting: {self.closed}")
                await self._changed.wait()

    async def subscribe(self, room_id: int, since: int | None = None, ref: str = "sub") -> dict:
        frame: dict[str, object] = {"type": "SUBSCRIBE", "destination": f"/topic/message/{room_id}", "ref": ref}
        if since is not None:
            frame["since"] = since
        await self.send(**frame)
        return await self.wait_for(lambda f: f.get("ref") == ref and f["type"] in ("SUBSCRIBED", "ERROR"))

    async def send_chat(
        self, room_id: int, text: str, client_msg_id: str | None = None, ref: str | None = None
    ) -> dict:
        ref = ref or client_msg_id or text
        await self.send(type="SEND", roomId=room_id, text=text, clientMsgId=client_msg_id, ref=ref)
        return await self.wait_for(lambda f: f.get("ref") == ref and f["type"] in ("ACK", "ERROR"))

    def messages(self, room_id: int, kind: str | None = "chat") -> list[dict]:
        return [
            f["message"]
            for f in self.frames
            if f["type"] == "ROOM_MESSAGE"
            and f["message"]["roomId"] == room_id
            and (kind is None or f["message"]["kind"] == kind)
        ]

    def errors(self) -> list[dict]:
        return [f for f in self.frames if f["type"] == "ERROR"]


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    """The WebSocket handshake's token header (a token never goes in the URL)."""
    return [(b"Authorization", f"Bearer {token}".encode())]


@asynccontextmanager
async def connect(base_url: str, user_id: str, token: str | None = None) -> AsyncIterator[ChatClient]:
    token = token or await login(base_url, user_id)
    ws_url = base_url.replace("http://", "ws://") + "/ws"
    async with open_websocket_url(ws_url, extra_headers=bearer(token)) as ws, trio.open_nursery() as nursery:
        client = ChatClient(ws, user_id)
        nursery.start_soon(client._read)
        await client.wait_for(lambda f: f["type"] == "session-info")
        yield client
        nursery.cancel_scope.cancel()


class ResumingClient:
    """A well-behaved client: on a dropped connection it moves to the next node, re-enters the
    room with `since` = the highest seq it holds, and retries unacknowledged sends with the same
    clientMsgId."""

    def __init__(
        self, nursery: trio.Nursery, urls: list[str], user_id: str, token: str, room_id: int, first_node: int
    ) -> None:
        self._nursery = nursery
        self.urls, self.user_id, self.token, self.room_id = urls, user_id, token, room_id
        self.node = first_node
        self.received: list[dict] = []
        self.acked: dict[str, dict] = {}
        self.reconnects = 0
        self._ws: WebSocketConnection | None = None
        self._frames: trio.MemorySendChannel | None = None

    @property
    def last_seq(self) -> int | None:
        return self.received[-1]["seq"] if self.received else None

    async def _connect(self) -> None:
        while True:
            url = self.urls[self.node % len(self.urls)].replace("http://", "ws://")
            try:
                with trio.fail_after(5):
                    self._ws = await connect_websocket_url(self._nursery, f"{url}/ws", extra_headers=bearer(self.token))
                frame: dict[str, object] = {
                    "type": "SUBSCRIBE",
                    "destination": f"/topic/message/{self.room_id}",
                    "ref": "resume",
                }
                if self.last_seq is not None:
                    frame["since"] = self.last_seq
                await self._ws.send_message(json.dumps(frame))
                while True:
                    reply = await self._next_frame()
                    if reply.get("ref") == "resume":
                        if reply["type"] == "SUBSCRIBED":
                            return
                        raise ConnectionClosed(None)  # refused: try the next node
            except (ConnectionClosed, OSError, HandshakeError, trio.TooSlowError):
                self.node += 1
                self.reconnects += 1
                await trio.sleep(0.3)

    @property
    def _live(self) -> WebSocketConnection:
        assert self._ws is not None, "connect first"
        return self._ws

    async def _next_frame(self, timeout: float = 10.0) -> dict:
        with trio.fail_after(timeout):
            frame = json.loads(await self._live.get_message())
        if frame["type"] == "ROOM_MESSAGE" and frame["message"]["roomId"] == self.room_id:
            message = frame["message"]
            if self.last_seq is None or message["seq"] > self.last_seq:
                self.received.append(message)
            else:
                self.received.append({**message, "outOfOrder": True})
        return frame

    async def receive_until(self, done: Callable[[], bool], timeout: float) -> None:
        with trio.fail_after(timeout):
            while not done():
                if self._ws is None:
                    await self._connect()
                try:
                    await self._next_frame(timeout=1.0)
                except trio.TooSlowError:
                    continue
                except (ConnectionClosed, OSError):
                    self._ws = None
                    self.node += 1
                    self.reconnects += 1

    async def send_until_acked(self, text: str, client_msg_id: str, timeout: float = 60.0) -> dict:
        with trio.fail_after(timeout):
            while True:
                if self._ws is None:
                    await self._connect()
                try:
                    await self._live.send_message(
                        json.dumps(
                            {
                                "type": "SEND",
                                "roomId": self.room_id,
                                "text": text,
                                "clientMsgId": client_msg_id,
                                "ref": client_msg_id,
                            }
                        )
                    )
                    while True:
                        frame = await self._next_frame()
                        if frame.get("ref") == client_msg_id and frame["type"] == "ACK":
                            self.acked[client_msg_id] = frame
                            return frame
                        if frame.get("ref") == client_msg_id and frame["type"] == "ERROR":
                            await trio.sleep(0.5)
                            break
                except (ConnectionClosed, OSError, trio.TooSlowError):
                    self._ws = None
                    self.node += 1
                    self.reconnects += 1

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.aclose()
