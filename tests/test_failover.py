"""A node dies with SIGKILL mid-stream: no acknowledged message is lost, none is duplicated."""

from __future__ import annotations

import httpx
import trio
from client import ResumingClient, create_room, login

MESSAGES_PER_SENDER = 60


async def stored_messages(base_url: str, room_id: int) -> list[dict]:
    """Every stored message of the room, oldest first, through the history API."""
    messages: list[dict] = []
    before = None
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        while True:
            params = {"limit": 100} | ({"before": before} if before is not None else {})
            page = (await http.get(f"/api/room/{room_id}/messages", params=params)).json()["data"]
            messages.extend(page)
            if len(page) < 100:
                return list(reversed(messages))
            before = page[-1]["seq"]


async def test_sigkill_mid_stream_loses_no_acknowledged_message(make_cluster):
    cluster = await make_cluster(3)
    urls = cluster.urls
    token = await login(urls[0], "owner")
    room = await create_room(urls[0], token, "failover")
    victim = cluster.nodes[1]

    async with trio.open_nursery() as nursery:
        senders = [
            ResumingClient(nursery, urls, user, await login(urls[i], user), room["id"], first_node=i)
            for i, user in enumerate(["fa", "fb", "fc"])
        ]
        receivers = [
            ResumingClient(nursery, urls, user, await login(urls[i], user), room["id"], first_node=i)
            for i, user in [(1, "watch-b"), (2, "watch-c")]
        ]
        for client in senders + receivers:
            await client._connect()

        async def send_all(client: ResumingClient) -> None:
            for n in range(MESSAGES_PER_SENDER):
                await client.send_until_acked(f"{client.user_id} {n}", f"{client.user_id}-{n}")
                await trio.sleep(0.02)

        async def kill_victim() -> None:
            await trio.sleep(1.0)
            victim.kill()

        async with trio.open_nursery() as work:
            for client in senders:
                work.start_soon(send_all, client)
            work.start_soon(kill_victim)

        acked_ids = {ack["id"] for client in senders for ack in client.acked.values()}
        assert len(acked_ids) == MESSAGES_PER_SENDER * len(senders)
        for client in receivers:
            await client.receive_until(lambda c=client: acked_ids <= {m["id"] for m in c.received}, timeout=60)
            chat = [m for m in client.received if m["kind"] == "chat"]
            ids = [m["id"] for m in chat]
            assert len(ids) == len(set(ids)), "a message was delivered twice"
            assert set(ids) == acked_ids
            assert not any(m.get("outOfOrder") for m in client.received)
        assert senders[1].reconnects >= 1 and receivers[0].reconnects >= 1  # they were on the victim
        # every sender's messages arrive in the order it sent them
        for sender in senders:
            texts = [
                m["text"] for m in receivers[1].received if m["senderId"] == sender.user_id and m["kind"] == "chat"
            ]
            assert texts == [f"{sender.user_id} {n}" for n in range(MESSAGES_PER_SENDER)]
        for client in senders + receivers:
            await client.aclose()
        nursery.cancel_scope.cancel()

    with trio.fail_after(30):
        while True:
            stored = [m for m in await stored_messages(urls[0], room["id"]) if m["kind"] == "chat"]
            if len(stored) >= len(acked_ids):
                break
            await trio.sleep(0.5)
    stored_ids = [m["id"] for m in stored]
    assert len(stored_ids) == len(set(stored_ids)) == len(acked_ids)
    assert set(stored_ids) == acked_ids
