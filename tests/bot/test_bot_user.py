"""A simulated user's accounting of what it receives (duplicates, order, latency, membership) and
of what it sends."""

import socket
import time

import msgspec
import pytest
import trio

from chattrio.bot import runner as runner_module
from chattrio.bot import user as user_module
from chattrio.bot.config import load_config
from chattrio.bot.runner import WorkerContext, WorkerPlan
from chattrio.bot.stats import SentMessage
from chattrio.bot.user import SimUser
from chattrio.bot.ws import WsConnection, mask_payload


def _user():
    cfg = load_config(["--node", "http://127.0.0.1:1", "--users", "2"])
    ctx = WorkerContext(WorkerPlan(cfg, "run1", time.time(), [7], [0, 1]))
    return ctx, SimUser(ctx, 0, 7, cfg.node_endpoints())


def _message(seq, cmid, room=7, kind="chat"):
    return msgspec.json.encode(
        {
            "type": "ROOM_MESSAGE",
            "message": {
                "id": f"id{seq}",
                "roomId": room,
                "seq": seq,
                "senderId": "bot1",
                "kind": kind,
                "text": "hi",
                "clientMsgId": cmid,
                "sentAt": 0,
            },
        }
    )


async def test_duplicates_reordering_and_foreign_messages():
    ctx, user = _user()
    sent_us = int(time.time() * 1e6) - 5000
    user.dispatch_all(
        [
            msgspec.json.encode({"type": "SUBSCRIBED", "ref": "room", "destination": "/topic/message/7", "lastSeq": 3}),
            _message(10, f"run1.1.0.{sent_us}"),
            _message(20, f"run1.1.2.{sent_us}"),
            _message(15, f"run1.1.1.{sent_us}"),  # late: out of order, still delivered
            _message(20, f"run1.1.2.{sent_us}"),  # same seq again: duplicate
            _message(25, None, kind="join"),  # not ours: ordering only
            _message(30, f"other.1.0.{sent_us}"),  # another run's message
        ]
    )
    c = ctx.ledger.counters
    assert (c["duplicates"], c["outOfOrder"], c["delivered"]) == (1, 1, 3)
    assert ctx.ledger.members == {7: [3]}
    assert {k: v.receivers for k, v in ctx.ledger.seen.items()} == {
        "run1.1.0." + str(sent_us): 1,
        "run1.1.2." + str(sent_us): 1,
        "run1.1.1." + str(sent_us): 1,
    }
    assert 4 <= ctx.ledger.timeline.end_to_end().percentile(50) / 1000 < 1000  # ms, from the clientMsgId
    assert user.track.highest == 30


async def test_protocol_violations_are_noted_not_fatal():
    ctx, user = _user()
    user.dispatch_all([b'{"type": "ROOM_MESSAGE", "message": {"roomId": "seven"}}', _message(5, None, room=8)])
    assert ctx.ledger.counters["protocolViolations"] == 2
    assert len(ctx.notes) == 2


async def test_ack_settles_the_pending_send_once():
    ctx, user = _user()
    now = time.time()
    ctx.ledger.sent["run1.0.0.1"] = SentMessage(7, now - 0.25)
    user.pending["run1.0.0.1"] = b"..."
    ack = msgspec.json.encode(
        {"type": "ACK", "ref": "run1.0.0.1", "clientMsgId": "run1.0.0.1", "id": "x", "roomId": 7, "seq": 42}
    )
    user.dispatch_all([ack, ack])
    sent = ctx.ledger.sent["run1.0.0.1"]
    assert sent.acked and sent.ack_seq == 42 and not user.pending
    assert ctx.ledger.ack.count == 1 and 240 <= ctx.ledger.ack.percentile(50) / 1000 < 10_000


async def test_what_a_user_holds_for_the_settle_reports():
    ctx, user = _user()
    assert user.unsettled() and user.highest_held() is None  # not joined yet
    subscribed = msgspec.json.encode(
        {"type": "SUBSCRIBED", "ref": "room", "destination": "/topic/message/7", "lastSeq": 50}
    )
    user.dispatch_all([subscribed])
    assert user.highest_held() == 50  # its subscription promised nothing up to lastSeq
    user.dispatch_all([_message(53, None)])
    assert user.highest_held() == 53
    user.conn = object()  # stands for its connection: only whether it has one is read
    assert not user.unsettled()
    ack = {"type": "ACK", "ref": "c1", "clientMsgId": "c1", "id": "x", "roomId": 7, "seq": 56}
    ctx.ledger.sent["c1"] = SentMessage(7, time.time())
    user.pending["c1"] = b"..."
    assert user.unsettled()  # a SEND unanswered
    user.dispatch_all([msgspec.json.encode(ack)])
    assert ctx.acked_highest == {7: 56} and not user.unsettled()
    user.conn = None  # reconnecting
    assert user.unsettled()
    user.done = True  # it left (or failed to join): nothing more to wait for
    assert not user.unsettled()


async def test_a_message_below_the_subscription_is_a_violation():
    ctx, user = _user()
    subscribed = msgspec.json.encode(
        {"type": "SUBSCRIBED", "ref": "room", "destination": "/topic/message/7", "lastSeq": 50}
    )
    user.dispatch_all([subscribed, _message(49, None), _message(51, None)])
    assert ctx.ledger.counters["protocolViolations"] == 1


async def test_send_next_records_the_message_and_writes_it_or_leaves_the_rest_to_the_clock():
    ctx, user = _user()
    ours, server = socket.socketpair()
    ours.setblocking(False)
    user.conn = WsConnection(ours, trio.SocketStream(trio.socket.from_stdlib_socket(ours)), b"")
    assert user.send_next() is None  # written at once
    frame = server.recv(4096)
    head = 4 if frame[1] & 0x7F == 126 else 2  # a SEND is usually longer than 125 bytes
    sent = msgspec.json.decode(mask_payload(frame[head + 4 :], frame[head : head + 4]))
    assert sent["type"] == "SEND" and sent["clientMsgId"] in user.pending and sent["clientMsgId"] in ctx.ledger.sent
    # A frame the kernel only partly took holds the wire: the next message waits for it.
    big = user.conn.send_text_nowait(b"x" * (4 << 20))
    assert big is not None
    finish = user.send_next()
    assert finish is not None and len(user.pending) == 2
    server.close()
    with trio.fail_after(5):
        async with trio.open_nursery() as writers:
            writers.start_soon(user._finish, big)
            # The connection broke: the write ends quietly, the message stays pending.
            writers.start_soon(finish)
    assert len(user.pending) == 2
    # While reconnecting the message is only recorded; _open_session re-sends it.
    user.conn = None
    assert user.send_next() is None and len(user.pending) == 3 and len(ctx.ledger.sent) == 3
    assert len({cmid.split(".")[2] for cmid in user.pending}) == 3  # numbered 0, 1, 2


async def test_the_keepalive_gives_up_a_silent_connection_but_not_one_with_an_answer_unread(autojump_clock):
    """After a stall of the whole process the keepalive may run before the task that reads: a
    node's answer waiting in the kernel's buffer means the connection was not silent."""
    ctx, user = _user()  # a PING after 20 s of silence, given up after 40 s
    ours, server = socket.socketpair()
    ours.setblocking(False)
    server.setblocking(False)
    user.conn = conn = WsConnection(ours, trio.SocketStream(trio.socket.from_stdlib_socket(ours)), b"")
    user.last_received = trio.current_time()
    server.send(b"\x8a\x00")  # a pong, which nothing here reads
    async with trio.open_nursery() as nursery:
        user._nursery = nursery
        nursery.start_soon(user._keepalive)
        await trio.sleep(200)
        assert "keepaliveTimeouts" not in ctx.ledger.counters and not conn.needs_task
        assert server.recv(4096)  # the keepalive's PINGs were written
        ours.recv(4096)  # read at last, but it came 200 s ago: silent since
        with trio.fail_after(30):  # the next PING, and 20 s for its answer
            while "keepaliveTimeouts" not in ctx.ledger.counters:
                await trio.sleep(0.5)
        assert conn.needs_task  # closed: its user's task would reconnect
        nursery.cancel_scope.cancel()
    server.close()


async def test_a_ping_sent_late_gets_the_whole_keepalive_for_its_answer(autojump_clock):
    """The process stalled for 100 s: the PING goes out when it wakes up, and the connection is
    only given up 20 s later, not at once for the 100 s nothing could be read."""
    ctx, user = _user()
    ours, server = socket.socketpair()
    ours.setblocking(False)
    user.conn = conn = WsConnection(ours, trio.SocketStream(trio.socket.from_stdlib_socket(ours)), b"")
    user.last_received = trio.current_time() - 100
    async with trio.open_nursery() as nursery:
        user._nursery = nursery
        nursery.start_soon(user._keepalive)
        await trio.sleep(6)  # the keepalive looks again at most 5 s on: the PING is out
        assert server.recv(4096) and not conn.needs_task
        await trio.sleep(18)
        assert "keepaliveTimeouts" not in ctx.ledger.counters
        await trio.sleep(4)
        assert ctx.ledger.counters["keepaliveTimeouts"] == 1 and conn.needs_task
        nursery.cancel_scope.cancel()
    server.close()


async def test_a_frame_is_decoded_once_per_worker_and_counted_for_every_receiver(monkeypatch):
    cfg = load_config(["--node", "http://127.0.0.1:1", "--users", "3"])
    ctx = WorkerContext(WorkerPlan(cfg, "run1", time.time(), [7], [0, 1, 2]))
    users = [SimUser(ctx, i, 7, cfg.node_endpoints()) for i in range(2)] + [SimUser(ctx, 2, 8, cfg.node_endpoints())]
    sent_us = int(time.time() * 1e6) - 5000
    frame = _message(10, f"run1.1.0.{sent_us}")
    decodes = []
    real_decode = user_module._decode
    monkeypatch.setattr(user_module, "_decode", lambda payload: decodes.append(payload) or real_decode(payload))
    for user in users:
        user.dispatch_all([bytes(frame)])  # equal bytes, distinct objects, as read from each socket
    assert decodes == [frame]
    assert ctx.ledger.seen[f"run1.1.0.{sent_us}"].receivers == 2
    assert ctx.ledger.counters["delivered"] == 2
    assert ctx.ledger.counters["protocolViolations"] == 1  # the user of room 8 did not enter room 7
    assert users[1].track.highest == 10


async def test_forgetting_decoded_frames_loses_no_accounting(monkeypatch):
    monkeypatch.setattr(runner_module, "ROOM_MESSAGES_REMEMBERED", 2)
    ctx, user = _user()
    other = SimUser(ctx, 1, 7, user.nodes)
    sent_us = int(time.time() * 1e6)
    frames = [_message(seq, f"run1.1.{seq}.{sent_us}") for seq in range(5)]
    user.dispatch_all(frames)
    other.dispatch_all(frames)  # most were forgotten in between: decoded again
    assert {v.receivers for v in ctx.ledger.seen.values()} == {2}
    assert len(ctx.ledger.seen) == 5 and len(ctx.room_messages) <= 2
    assert ctx.ledger.counters["duplicates"] == 0


async def test_typing_frames_are_counted_not_taken_for_a_protocol_violation():
    ctx, user = _user()
    notice = msgspec.json.encode({"type": "TYPING", "roomId": 7, "userId": "bot1"})
    user.dispatch_all([notice, notice])
    assert ctx.ledger.counters.get("typingReceived") == 2
    assert not [k for k in ctx.ledger.counters if "violation" in k.lower()]


def test_the_typing_rate_is_a_flag_and_must_not_be_negative():
    assert load_config(["--node", "http://127.0.0.1:1", "--typing-rate", "0.5"]).typing_per_second == 0.5
    assert load_config(["--node", "http://127.0.0.1:1"]).typing_per_second == 0
    with pytest.raises(ValueError, match="typingPerSecond must be >= 0"):
        load_config(["--node", "http://127.0.0.1:1", "--typing-rate", "-1"])
