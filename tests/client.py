"""A protocol client for tests: REST via httpx, WebSocket via trio-websocket, frames recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

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
        frame = {"type": "SUBSCRIBE", "destination": f"/topic/message/{room_id}", "ref": ref}
        if since is not None:
            frame["since"] = since
        await self.send(**frame)
        return await self.wait_for(lambda f: f.get("ref") == ref and f["type"] in ("SUBSCRIBED", "ERROR"))

    async def send_chat(self, room_id: int, text: str, client_msg_id: str | None = None, ref: str | None = None) -> dict:
        ref = ref or client_msg_id or text
        await self.send(type="SEND", roomId=room_id, text=text, clientMsgId=client_msg_id, ref=ref)
        return await self.wait_for(lambda f: f.get("ref") == ref and f["type"] in ("ACK", "ERROR"))

    def messages(self, room_id: int, kind: str | None = "chat") -> list[dict]:
        return [
            f["message"] for f in self.frames
            if f["type"] == "ROOM_MESSAGE" and f["message"]["roomId"] == room_id
            and (kind is None or f["message"]["kind"] == kind)
        ]

    def errors(self) -> list[dict]:
        return [f for f in self.frames if f["type"] == "ERROR"]


@asynccontextmanager
async def connect(base_url: str, user_id: str, token: str | None = None) -> AsyncIterator[ChatClient]:
    token = token or await login(base_url, user_id)
    ws_url = base_url.replace("http://", "ws://") + f"/ws?token={token}"
    async with open_websocket_url(ws_url) as ws, trio.open_nursery() as nursery:
        client = ChatClient(ws, user_id)
        nursery.start_soon(client._read)
        await client.wait_for(lambda f: f["type"] == "session-info")
        yield client
        nursery.cancel_scope.cancel()
