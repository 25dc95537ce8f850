"""`python -m chattrio bot --receive-bench`: frames per second through the bot's receive path
(frame parser, msgspec decoding, delivery accounting) in this process, with no server, so the
claim that the bot is not the bottleneck can be checked on any machine."""

from __future__ import annotations

import struct
import time

import msgspec
import trio

from chattrio.bot.config import load_config
from chattrio.bot.runner import WorkerContext, WorkerPlan
from chattrio.bot.user import SimUser
from chattrio.bot.ws import FrameParser

USERS = 50
MESSAGES = 20_000
READ_BYTES = 64 * 1024


def _server_frame(payload: bytes) -> bytes:
    n = len(payload)
    return (bytes((0x81, n)) if n < 126 else struct.pack(">BBH", 0x81, 126, n)) + payload


async def _measure() -> float:
    cfg = load_config(["--node", "http://127.0.0.1:1", "--users", str(USERS)])
    ctx = WorkerContext(WorkerPlan(cfg, "bench0", time.time(), [42], list(range(USERS))))
    now_us = int(time.time() * 1e6)
    stream = b"".join(
        _server_frame(
            msgspec.json.encode(
                {
                    "type": "ROOM_MESSAGE",
                    "message": {
                        "id": "6b1f3c1e-8a3b-4a8e-9b7f-0c2d3e4f5a6b",
                        "roomId": 42,
                        "seq": 1000 + i,
                        "senderId": f"bot{i % USERS}",
                        "kind": "chat",
                        "text": ctx.text,
                        "clientMsgId": f"bench0.{i % USERS}.{i}.{now_us}",
                        "sentAt": now_us // 1000,
                    },
                }
            )
        )
        for i in range(MESSAGES)
    )
    reads = [stream[i : i + READ_BYTES] for i in range(0, len(stream), READ_BYTES)]
    users = [SimUser(ctx, i, 42, cfg.node_endpoints()) for i in range(USERS)]
    frames = 0
    # CPU time, not wall time: on a shared machine the wall clock measures the neighbours too.
    started = time.process_time()
    parsers = [FrameParser() for _ in users]
    for data in reads:  # every user receives every read, as in one busy room
        for user, parser in zip(users, parsers):
            payloads = parser.feed(data)
            user.dispatch_all(payloads)
            frames += len(payloads)
    elapsed = time.process_time() - started
    assert ctx.ledger.counters["delivered"] == frames == USERS * MESSAGES
    return frames / elapsed


def receive_bench() -> int:
    rate = trio.run(_measure)
    print(
        f"receive path: {rate:,.0f} frames per CPU second in one process"
        f" ({USERS} users x {MESSAGES} ROOM_MESSAGE frames: parse, decode, account)"
    )
    return 0
