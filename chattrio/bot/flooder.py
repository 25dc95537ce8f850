"""A hostile user for the limits benchmark: several connections in one room, each sending the
longest messages as fast as the node allows (it waits what RATE_LIMITED asks, so it is not
closed for ignoring refusals).

Its clientMsgIds do not carry the run's prefix, so the other users' accounting ignores its
messages: the report's latencies and losses are the other users' (docs/security-limits.md).
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
_ROOM_MESSAGE = b'{"type":"ROOM_MESSAGE"'  # how the server's room messages begin: not decoded here


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


async def _flood_connection(node: Node, token: str, name: str, room_id: int, start: float, end: float,
                            tally: Counter) -> None:
    try:
        conn = await WsConnection.connect(node.ws_host, node.ws_port, f"{node.ws_path}?token={token}", CONNECT_TIMEOUT)
    except (WsError, OSError, trio.TooSlowError):
        tally["connectRefused"] += 1
        return
    text = ("flood " * FLOOD_MESSAGE_LENGTH)[:FLOOD_MESSAGE_LENGTH]
    try:
        await conn.send_text(frames.client_encoder.encode(frames.Subscribe(frames.room_topic(room_id), ref="in")))
        await _answer(conn, "in")
        await trio.sleep_until(start)
        with trio.move_on_at(end):
            for n in itertools.count():
                ref = f"flood.{name}.{n}"
                await conn.send_text(frames.client_encoder.encode(frames.Send(room_id, text, ref, ref)))
                tally["sent"] += 1
                answer = await _answer(conn, ref)
                if isinstance(answer, frames.Ack):
                    tally["acked"] += 1
                elif answer.code == "RATE_LIMITED":
                    tally["rateLimited"] += 1
                    await trio.sleep((answer.retryAfterMs or 1) / 1000)
                else:
                    tally[f"error.{answer.code}"] += 1
        await conn.close()
    except (WsError, OSError, trio.TooSlowError) as exc:
        tally[f"closed: {exc}"[:80]] += 1
        await conn.aclose_now()


async def _answer(conn: WsConnection, ref: str) -> frames.Ack | frames.Error | frames.Subscribed:
    """The answer to the frame with this ref; the room's messages on the way are skipped."""
    with trio.fail_after(ANSWER_TIMEOUT):
        while True:
            for payload in await conn.receive():
                if payload.startswith(_ROOM_MESSAGE):
                    continue
                frame = frames.server_decoder.decode(payload)
                if getattr(frame, "ref", None) == ref:
                    return frame
