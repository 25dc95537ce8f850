"""A hostile user for the limits benchmark: several connections in one room, each sending the
longest messages at full speed (up to WINDOW unanswered; RATE_LIMITED pauses it for the time
asked, but what is already in flight is refused too) and connecting again when closed.

Its clientMsgIds do not carry the run's prefix, so the other users' accounting ignores its
messages: the report's latencies and losses are the other users' (docs/security.md).
"""

from __future__ import annotations

import itertools
from collections import Counter

import msgspec
import trio

from chattrio.bot import frames
from chattrio.bot.config import Node
from chattrio.bot.http import HttpPool
from chattrio.bot.ws import WsConnection, WsError

FLOOD_CONNECTIONS = 10  # per flooding user, spread over the nodes
FLOOD_MESSAGE_LENGTH = 4000  # the longest message the protocol allows
CONNECT_TIMEOUT = 10.0
ANSWER_TIMEOUT = 10.0
WINDOW = 32  # sends in flight per connection
RECONNECT_PAUSE = 0.5
_ROOM_MESSAGE = b'{"type":"ROOM_MESSAGE"'  # how the server's room messages begin: not decoded here
_decode = frames.server_decoder.decode
_GONE = (WsError, OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError)


async def flood(user_id: str, nodes: list[Node], room_id: int, start: float, end: float, tally: Counter) -> None:
    """Log in, open the connections, and from `start` to `end` (trio clock) send on each one;
    `tally` counts what happened (sent, acked, rateLimited, errors, closed)."""
    pool = HttpPool(nodes[0], size=1)
    try:
        response = await pool.request("POST", f"/api/user/enter/{user_id}")
    finally:
        await pool.aclose()
    if response.status not in (200, 201):
        tally["loginRefused"] += 1
        return
    token = msgspec.json.decode(response.body)["data"]["token"]
    async with trio.open_nursery() as nursery:
        for k in range(FLOOD_CONNECTIONS):
            node = nodes[k % len(nodes)]
            nursery.start_soon(_flood_connection, node, token, f"{user_id}.{k}", room_id, start, end, tally)


async def _flood_connection(
    node: Node, token: str, name: str, room_id: int, start: float, end: float, tally: Counter
) -> None:
    """One connection, opened again whenever the node closes it, until `end`."""
    with trio.move_on_at(end):
        for attempt in itertools.count():
            try:
                conn = await WsConnection.connect(node.ws_host, node.ws_port, node.ws_path, CONNECT_TIMEOUT, token)
            except (WsError, OSError, trio.TooSlowError):
                tally["connectRefused"] += 1
                await trio.sleep(RECONNECT_PAUSE)
                continue
            try:
                await _enter(conn, room_id)
                await trio.sleep_until(start)
                async with trio.open_nursery() as nursery:
                    flow = _Flow(trio.Semaphore(WINDOW))
                    nursery.start_soon(_read_answers, conn, flow, tally, nursery.cancel_scope)
                    await _send_flood(conn, f"flood.{name}.{attempt}", room_id, flow, tally)
            except _GONE as exc:
                tally[f"closed: {exc}"[:80]] += 1
            finally:
                await conn.aclose_now()
            await trio.sleep(RECONNECT_PAUSE)


class _Flow:
    """Sends not answered yet are bounded by the window; RATE_LIMITED pauses the sender."""

    def __init__(self, window: trio.Semaphore) -> None:
        self.window = window
        self.paused_until = 0.0


async def _enter(conn: WsConnection, room_id: int) -> None:
    await conn.send_text(frames.client_encoder.encode(frames.Subscribe(frames.room_topic(room_id), ref="in")))
    with trio.fail_after(ANSWER_TIMEOUT):
        while True:
            for payload in await conn.receive():
                if not payload.startswith(_ROOM_MESSAGE) and getattr(_decode(payload), "ref", None) == "in":
                    return


async def _send_flood(conn: WsConnection, prefix: str, room_id: int, flow: _Flow, tally: Counter) -> None:
    text = ("flood " * FLOOD_MESSAGE_LENGTH)[:FLOOD_MESSAGE_LENGTH]
    for n in itertools.count():
        await flow.window.acquire()
        await trio.sleep_until(flow.paused_until)
        ref = f"{prefix}.{n}"
        try:
            await conn.send_text(frames.client_encoder.encode(frames.Send(room_id, text, ref, ref)))
        except _GONE:
            return  # the reader reports it
        tally["sent"] += 1


async def _read_answers(conn: WsConnection, flow: _Flow, tally: Counter, scope: trio.CancelScope) -> None:
    try:
        await _count_answers(conn, flow, tally)
    except _GONE as exc:
        tally[f"closed: {exc}"[:80]] += 1
    finally:
        scope.cancel()  # the connection is gone: the sender stops too


async def _count_answers(conn: WsConnection, flow: _Flow, tally: Counter) -> None:
    while True:
        for payload in await conn.receive():
            if payload.startswith(_ROOM_MESSAGE):
                continue
            frame = _decode(payload)
            if isinstance(frame, frames.Ack):
                tally["acked"] += 1
            elif isinstance(frame, frames.Error):
                tally["rateLimited" if frame.code == "RATE_LIMITED" else f"error.{frame.code}"] += 1
                if frame.retryAfterMs:
                    flow.paused_until = max(flow.paused_until, trio.current_time() + frame.retryAfterMs / 1000)
            else:
                continue
            flow.window.release()
