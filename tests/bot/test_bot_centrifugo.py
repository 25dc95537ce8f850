"""The Centrifugo driver's reading of its JSON client protocol, as pure logic: replies and pushes
fed to a user, the ledger read back (the benchmark against a real Centrifugo is scripts/peers.sh)."""

import time

import jwt
import msgspec
import pytest

from chattrio.bot.centrifugo import CentrifugoUser, channel_name
from chattrio.bot.config import load_config
from chattrio.bot.runner import WorkerContext, WorkerPlan

SECRET = "a-test-secret-of-at-least-32-bytes!!"
ROOM = 0
CHANNEL = channel_name("run1", "unit", ROOM)


def _user():
    cfg = load_config(
        ["--node", "http://127.0.0.1:1", "--users", "2", "--scenario", "unit"]
        + ["--system", "centrifugo", "--centrifugo-secret", SECRET]
    )
    ctx = WorkerContext(WorkerPlan(cfg, "run1", time.time(), [ROOM], [0, 1]))
    return ctx, CentrifugoUser(ctx, 0, ROOM, cfg.node_endpoints())


def _push(offset, cmid, channel=CHANNEL):
    data = {"clientMsgId": cmid, "text": "hi"}
    pub = {"data": data, "offset": offset, "info": {"user": "bot1", "client": "c1"}}
    return msgspec.json.encode({"push": {"channel": channel, "pub": pub}})


def _subscribed(offset, **extra):
    return msgspec.json.encode({"id": 2, "subscribe": {"recoverable": True, "epoch": "e1", "offset": offset, **extra}})


async def test_the_system_needs_its_secret_and_speaks_on_its_websocket_path():
    with pytest.raises(ValueError, match="centrifugoSecret"):
        load_config(["--node", "http://127.0.0.1:1", "--system", "centrifugo"])
    with pytest.raises(ValueError, match="system must be one of"):
        load_config(["--node", "http://127.0.0.1:1", "--system", "socketio"])
    ctx, user = _user()
    assert user.nodes[0].ws_path == "/connection/websocket"
    assert ctx.config.metrics_endpoints()[0].port == 1  # /metrics on its one port


async def test_the_token_names_the_user_and_is_signed_with_the_secret():
    _, user = _user()
    await user._login()
    assert jwt.decode(user.token, SECRET, algorithms=["HS256"])["sub"] == "bot0"


async def test_offsets_are_the_seqs_of_the_accounting():
    ctx, user = _user()
    user.awaiting_subscribed = True
    sent_us = int(time.time() * 1e6) - 5000
    user.dispatch_all([_subscribed(3)])
    assert not user.awaiting_subscribed
    assert ctx.ledger.members == {ROOM: [3]}
    # several replies in one frame, a line each
    frame = b"\n".join(
        [
            _push(4, f"run1.1.0.{sent_us}"),
            _push(6, f"run1.1.2.{sent_us}"),
            _push(5, f"run1.1.1.{sent_us}"),  # late: out of order, still delivered
            _push(6, f"run1.1.2.{sent_us}"),  # the same offset again: a duplicate
            _push(7, f"other.1.3.{sent_us}", channel="chat:elsewhere"),  # not our room
        ]
    )
    user.dispatch_all([frame])
    c = ctx.ledger.counters
    assert (c["delivered"], c["outOfOrder"], c["duplicates"], c["protocolViolations"]) == (3, 1, 1, 1)
    assert {k: v.seq for k, v in ctx.ledger.seen.items()} == {
        f"run1.1.0.{sent_us}": 4,
        f"run1.1.2.{sent_us}": 6,
        f"run1.1.1.{sent_us}": 5,
    }
    assert user.track.highest == 6
    assert 4 <= ctx.ledger.timeline.end_to_end().percentile(50) / 1000 < 1000  # ms, from the clientMsgId


async def test_a_publish_reply_acknowledges_and_an_error_refuses():
    ctx, user = _user()
    first, second = user.new_message(), user.new_message()
    command = msgspec.json.decode(first)
    assert command["publish"]["channel"] == CHANNEL and command["id"] == 10
    cmid = command["publish"]["data"]["clientMsgId"]
    refused = msgspec.json.decode(second)["publish"]["data"]["clientMsgId"]
    user.dispatch_all([b'{"id":10,"publish":{}}\n{"id":11,"error":{"code":103,"message":"permission denied"}}'])
    assert ctx.ledger.sent[cmid].acked and ctx.ledger.ack.count == 1
    assert not ctx.ledger.sent[refused].acked
    assert user.pending == {} and ctx.ledger.counters["error.103"] == 1


async def test_a_refused_subscription_ends_the_session():
    from chattrio.bot.ws import WsError

    _, user = _user()
    with pytest.raises(WsError, match="subscribe refused: 103"):
        user.dispatch_all([b'{"id":2,"error":{"code":103,"message":"permission denied"}}'])


async def test_a_resubscription_recovers_from_the_highest_offset_before_live_pushes():
    ctx, user = _user()
    sent_us = int(time.time() * 1e6) - 5000
    user.dispatch_all([_subscribed(0)])
    user.dispatch_all([_push(1, f"run1.1.0.{sent_us}")])
    request = msgspec.json.decode(user._subscribe_command())["subscribe"]
    assert request == {"channel": CHANNEL, "recoverable": True, "recover": True, "epoch": "e1", "offset": 1}
    # the reply brings offsets 2 and 3; the live push of 4 follows it in the same frame
    recovered = [{"data": {"clientMsgId": f"run1.1.{k}.{sent_us}", "text": "hi"}, "offset": k + 1} for k in (1, 2)]
    user.awaiting_subscribed = True
    user._dispatch_in_order(
        [_subscribed(3, recovered=True, publications=recovered) + b"\n" + _push(4, f"run1.1.3.{sent_us}")]
    )
    c = ctx.ledger.counters
    assert (c["delivered"], c["outOfOrder"], c["duplicates"]) == (4, 0, 0)
    assert "recoveryFailed" not in c
    assert ctx.ledger.members == {ROOM: [0]}  # a resubscription is no new member
