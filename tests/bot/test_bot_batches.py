"""The bot's reading of MESSAGES frames (several messages of a room in one frame, /ws?batch=1):
every message is accounted for as if it came alone, and a MESSAGES frame is decoded once per
worker."""

import time

import msgspec

from chattrio.bot import user as user_module
from chattrio.bot.config import load_config
from chattrio.bot.runner import WorkerContext, WorkerPlan
from chattrio.bot.user import SimUser


def _users(*flags: str) -> tuple[WorkerContext, list[SimUser]]:
    cfg = load_config(["--node", "http://127.0.0.1:1", "--users", "2", *flags])
    ctx = WorkerContext(WorkerPlan(cfg, "run1", time.time(), [7], [0, 1]))
    return ctx, [SimUser(ctx, i, 7, cfg.node_endpoints()) for i in range(2)]


def _chat(seq: int, cmid: str | None) -> dict:
    return {
        "id": f"id{seq}",
        "roomId": 7,
        "seq": seq,
        "senderId": "bot1",
        "kind": "chat",
        "text": "hi",
        "clientMsgId": cmid,
        "sentAt": 0,
    }


def _messages(*messages: dict) -> bytes:
    return msgspec.json.encode({"type": "MESSAGES", "roomId": 7, "messages": list(messages)})


async def test_every_message_of_a_messages_frame_is_accounted_for_in_order(monkeypatch):
    ctx, users = _users()
    sent_us = int(time.time() * 1e6) - 5000
    frame = _messages(_chat(10, f"run1.1.0.{sent_us}"), _chat(12, f"run1.1.1.{sent_us}"))
    decodes = []
    real_decode = user_module._decode
    monkeypatch.setattr(user_module, "_decode", lambda payload: decodes.append(payload) or real_decode(payload))
    for user in users:
        user.dispatch_all([bytes(frame), _messages(_chat(11, None), _chat(12, f"run1.1.1.{sent_us}"))])
    assert decodes.count(frame) == 1  # the second user found it decoded
    c = ctx.ledger.counters
    # Per user: 10 and 12 delivered; 11 (not ours) out of order after 12; 12 again a duplicate.
    assert (c["delivered"], c["outOfOrder"], c["duplicates"]) == (4, 2, 2)
    assert {v.receivers for v in ctx.ledger.seen.values()} == {2}
    assert c.get("protocolViolations", 0) == 0
    assert [user.track.highest for user in users] == [12, 12]


def test_the_bot_asks_for_batches_unless_told_not_to():
    assert load_config(["--node", "http://127.0.0.1:1"]).batch_frames is True
    assert load_config(["--node", "http://127.0.0.1:1", "--no-batch-frames"]).batch_frames is False
