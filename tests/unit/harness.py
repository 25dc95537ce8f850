"""A node's core wired to in-memory storage, and a session that records what it was sent."""

from __future__ import annotations

import itertools
import uuid
from typing import cast

import msgspec

from chattrio.chat import ChatService
from chattrio.config import Settings
from chattrio.fanout import Fanout
from chattrio.frames import encode_frame, parse_client_frame
from chattrio.metrics import Registry
from chattrio.presence import Presence
from chattrio.roomlog import RoomLog
from chattrio.rooms import RoomDirectory
from chattrio.transport.sessions import Session, SessionRegistry
from chattrio.transport.websocket import text_frame
from unit.memory import MemoryCache, MemoryDatabase, MemoryLog

_refs = itertools.count()


def server_frame(frame: bytes) -> dict:
    """The JSON of one unmasked, unfragmented server text frame."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return msgspec.json.decode(frame[start:])


class RecordingSession:
    """What ChatService, SessionRegistry and Presence use of a Session; frames are kept, decoded."""

    def __init__(self, user_id: str) -> None:
        self.id = uuid.uuid4().hex
        self.user_id = user_id
        self.rooms: set[int] = set()
        self.wants_room_events = False
        self.batches = False  # a session opened with /ws?batch=1 sets it
        self.closing = False
        self.must_drain = False  # everything sent is taken at once
        self.received: list[dict] = []
        self._queued: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.received.append(server_frame(frame))

    def queue(self, frame: bytes) -> bool:
        self._queued.append(frame)
        return len(self._queued) == 1

    def flush(self) -> None:
        queued, self._queued = self._queued, []
        self.received += (server_frame(frame) for frame in queued)

    def send(self, frame: msgspec.Struct) -> None:
        self.push(text_frame(encode_frame(frame)))

    def close(self, code: int, reason: str) -> None:
        self.closing = True

    async def drained(self) -> None:
        return None

    def of_type(self, frame_type: str) -> list[dict]:
        return [frame for frame in self.received if frame["type"] == frame_type]

    def texts(self, room_id: int) -> list[str]:
        return [f["message"]["text"] for f in self.of_type("ROOM_MESSAGE") if f["message"]["roomId"] == room_id]


class Shared:
    """The backing services every node of a test shares."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings(node_id="unit", topic_prefix="unit", topic_partitions=4)
        self.log = MemoryLog(self.settings)
        self.db = MemoryDatabase()
        self.cache = MemoryCache()


class CoreNode:
    """One node's core (chat, fan-out, presence) on the shared in-memory services."""

    def __init__(self, shared: Shared, node_id: str = "node-1", start_at_end: bool = False) -> None:
        self.shared = shared
        settings = self.settings = shared.settings
        metrics = self.metrics = Registry()
        self.sessions = SessionRegistry()
        self.room_log = RoomLog(settings.messages_topic)
        self.rooms = RoomDirectory(shared.db, shared.cache)
        self.presence = Presence(settings, shared.cache, self.sessions, shared.log, metrics)
        self.chat = ChatService(
            settings,
            self.sessions,
            self.room_log,
            self.rooms,
            shared.log,
            shared.db,
            shared.cache,
            self.presence,
            metrics,
        )
        self.fanout = Fanout(settings, self.sessions, self.room_log, self.rooms, metrics)
        self._assign(start_at_end)

    def _assign(self, at_end: bool) -> None:
        """As the fan-out's first assignment does: at the start of the partitions, or at their
        end, as a node that joins a running system."""
        for partition, records in enumerate(self.shared.log.partitions):
            offset = len(records) if at_end else 0
            self.room_log.positions[(self.settings.messages_topic, partition)] = offset
            self.room_log.note_start(partition, offset)

    def deliver(self) -> None:
        """One fan-out cycle: everything produced since the last one reaches local sessions."""
        self.fanout.apply(self.shared.log.read(dict(self.room_log.positions)))

    async def frame(self, session: RecordingSession, raw: dict) -> dict | None:
        """Handle one client frame and wait for its answer; returns the answer that carries its
        ref, if any."""
        ref = raw.setdefault("ref", f"r{next(_refs)}")
        await self.read(session, raw)
        answers = [f for f in session.received if f.get("ref") == ref]
        return answers[-1] if answers else None

    async def read(self, session: RecordingSession, raw: dict) -> None:
        """Handle one client frame as the session's reader does: a SEND is answered when the
        memory log settles its record (at once, unless the log holds records)."""
        # RecordingSession has what ChatService uses of a Session (see its docstring).
        await self.chat.handle(cast(Session, session), parse_client_frame(msgspec.json.encode(raw)))

    async def subscribe(self, session: RecordingSession, room_id: int, since: int | None = None) -> dict:
        raw: dict[str, object] = {"type": "SUBSCRIBE", "destination": f"/topic/message/{room_id}"}
        if since is not None:
            raw["since"] = since
        return _answered(await self.frame(session, raw))

    async def send(self, session: RecordingSession, room_id: int, text: str, client_msg_id: str | None = None) -> dict:
        raw: dict[str, object] = {"type": "SEND", "roomId": room_id, "text": text}
        if client_msg_id is not None:
            raw["clientMsgId"] = client_msg_id
        return _answered(await self.frame(session, raw))


def _answered(answer: dict | None) -> dict:
    assert answer is not None, "no answer carried the frame's ref"
    return answer
