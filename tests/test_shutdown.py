"""SIGTERM drains a node: sessions get close code 1012, the process exits 0 in bounded time."""

from __future__ import annotations

import trio
from client import connect, create_room, login


async def test_sigterm_closes_sessions_with_1012_and_exits_cleanly(make_cluster):
    cluster = await make_cluster(1)
    node = cluster.nodes[0]
    token = await login(node.url, "leaver")
    room = await create_room(node.url, token, "shutdown")
    async with connect(node.url, "leaver", token) as client:
        await client.subscribe(room["id"])
        assert (await client.send_chat(room["id"], "before", client_msg_id="s1"))["type"] == "ACK"
        node.proc.send_signal(15)
        with trio.fail_after(15):
            while client.closed is None:
                await trio.sleep(0.05)
        assert client.closed.reason.code == 1012
        assert client.closed.reason.reason == "service restart: reconnect"
    returncode = await trio.to_thread.run_sync(node.proc.wait, 20)  # a hang guard: TimeoutExpired
    assert returncode == 0
    assert "node stopped" in node.log_tail()
