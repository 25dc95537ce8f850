"""Chat across real nodes: delivery to every node, room order, resume, presence."""

from __future__ import annotations

import httpx
import trio
from client import connect, create_room, login


async def test_message_sent_on_one_node_reaches_the_others(cluster):
    a, b, c = cluster.urls
    token = await login(a, "ann")
    room = await create_room(a, token, "cross-node")
    async with connect(a, "ann", token) as ann, connect(b, "ben") as ben, connect(c, "cat") as cat:
        for client in (ann, ben, cat):
            assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        ack = await ann.send_chat(room["id"], "hello from a", client_msg_id="m1")
        assert ack["type"] == "ACK" and ack["roomId"] == room["id"]
        for client in (ann, ben, cat):
            message = await client.wait_for(lambda f: f["type"] == "ROOM_MESSAGE" and f["message"]["kind"] == "chat")
            assert message["message"]["text"] == "hello from a"
            assert message["message"]["senderId"] == "ann"
            assert message["message"]["seq"] == ack["seq"]
            assert message["message"]["id"] == ack["id"]


async def test_concurrent_messages_arrive_in_the_same_order_everywhere(cluster):
    urls = cluster.urls
    senders = ["s1", "s2", "s3", "s4", "s5"]
    token = await login(urls[0], "orderer")
    room = await create_room(urls[0], token, "order")
    total = 500
    async with connect(urls[0], "r1") as r1, connect(urls[1], "r2") as r2, connect(urls[2], "r3") as r3:
        receivers = [r1, r2, r3]
        for r in receivers:
            await r.subscribe(room["id"])

        async def send_all(index: int, user: str) -> None:
            async with connect(urls[index % 3], user) as client:
                await client.subscribe(room["id"])
                for n in range(total // len(senders)):
                    ack = await client.send_chat(room["id"], f"{user}-{n}", client_msg_id=f"{user}-{n}")
                    assert ack["type"] == "ACK", ack

        async with trio.open_nursery() as nursery:
            for i, user in enumerate(senders):
                nursery.start_soon(send_all, i, user)
        for r in receivers:
            await r.wait_until(lambda r=r: len(r.messages(room["id"])) >= total, timeout=60)
        orders = [[m["id"] for m in r.messages(room["id"])] for r in receivers]
        assert len(orders[0]) == total and len(set(orders[0])) == total
        assert orders[0] == orders[1] == orders[2]
        seqs = [m["seq"] for m in r1.messages(room["id"])]
        assert seqs == sorted(seqs)
        # each sender's own messages keep the order they were sent in
        for user in senders:
            mine = [m["text"] for m in r1.messages(room["id"]) if m["senderId"] == user]
            assert mine == [f"{user}-{n}" for n in range(total // len(senders))]


async def test_resume_with_since_has_no_gap_and_no_duplicate(cluster):
    a, b, _ = cluster.urls
    token = await login(a, "resumer")
    room = await create_room(a, token, "resume")
    async with connect(a, "talker") as talker, connect(b, "witness") as witness:
        await talker.subscribe(room["id"])
        await witness.subscribe(room["id"])
        acks = [await talker.send_chat(room["id"], f"early-{n}", client_msg_id=f"early-{n}") for n in range(10)]
        since = acks[3]["seq"]
        # node b has delivered all ten once its witness has them: the resume below then replays
        # all of them, and `lastSeq` is the tenth
        await witness.wait_until(lambda: len(witness.messages(room["id"])) == 10)
        async with connect(b, "resumer", token) as resumer:
            subscribed = await resumer.subscribe(room["id"], since=since)
            assert subscribed["type"] == "SUBSCRIBED"
            assert subscribed["lastSeq"] == acks[-1]["seq"]
            replayed = [m["text"] for m in resumer.messages(room["id"])]
            assert replayed == [f"early-{n}" for n in range(4, 10)]
            await talker.send_chat(room["id"], "live-1", client_msg_id="live-1")
            await resumer.wait_until(lambda: len(resumer.messages(room["id"])) == 7)
            assert resumer.messages(room["id"])[-1]["text"] == "live-1"


async def test_history_is_newest_first_and_pages_with_before(cluster):
    a = cluster.urls[0]
    token = await login(a, "historian")
    room = await create_room(a, token, "history")
    async with connect(a, "historian", token) as client:
        await client.subscribe(room["id"])
        # The join is announced on its own time (presence, then Kafka): wait for it, so that it is
        # the oldest message, before the chat.
        await client.wait_until(lambda: client.messages(room["id"], kind="join") != [])
        acks = [await client.send_chat(room["id"], f"h{n}", client_msg_id=f"h{n}") for n in range(7)]
    async with httpx.AsyncClient(base_url=a) as http:
        with trio.fail_after(20):
            while True:
                page = (await http.get(f"/api/room/{room['id']}/messages", params={"limit": 5})).json()["data"]
                if len(page) == 5 and page[0]["seq"] == acks[-1]["seq"]:
                    break
                await trio.sleep(0.2)
        assert [m["text"] for m in page] == ["h6", "h5", "h4", "h3", "h2"]
        older = (
            await http.get(f"/api/room/{room['id']}/messages", params={"before": page[-1]["seq"], "limit": 5})
        ).json()
        # the oldest is the system message of the historian entering the room
        assert [(m["kind"], m["text"]) for m in older["data"]] == [("chat", "h1"), ("chat", "h0"), ("join", "")]


async def test_retried_send_with_same_client_msg_id_is_delivered_once(cluster):
    a, b, _ = cluster.urls
    token = await login(a, "retrier")
    room = await create_room(a, token, "retry")
    async with connect(a, "retrier", token) as sender, connect(b, "watcher") as watcher:
        await sender.subscribe(room["id"])
        await watcher.subscribe(room["id"])
        first = await sender.send_chat(room["id"], "once", client_msg_id="dup-1", ref="first")
        await watcher.wait_until(lambda: len(watcher.messages(room["id"])) == 1)
        again = await sender.send_chat(room["id"], "once", client_msg_id="dup-1", ref="again")
        assert again["type"] == "ACK" and again["id"] == first["id"] and again["seq"] == first["seq"]
        await sender.send_chat(room["id"], "after", client_msg_id="dup-2")
        await watcher.wait_until(lambda: len(watcher.messages(room["id"])) == 2)
        assert [m["text"] for m in watcher.messages(room["id"])] == ["once", "after"]


async def test_sends_written_without_waiting_are_acked_and_delivered_in_send_order(cluster):
    a, b, _ = cluster.urls
    token = await login(a, "pipeliner")
    room = await create_room(a, token, "pipelined")
    texts = [f"p{n}" for n in range(8)]
    async with connect(a, "pipeliner", token) as sender, connect(b, "pipe-watcher") as watcher:
        await sender.subscribe(room["id"])
        await watcher.subscribe(room["id"])
        for text in texts:
            await sender.send(type="SEND", roomId=room["id"], text=text, clientMsgId=f"c-{text}", ref=text)
        await sender.send(type="SEND", roomId=room["id"], text="p2", clientMsgId="c-p2", ref="retry")
        refs = [*texts, "retry"]
        await sender.wait_until(lambda: all(any(f.get("ref") == ref for f in sender.frames) for ref in refs))
        answers = {f["ref"]: f for f in sender.frames if f.get("ref") in refs}
        assert {answer["type"] for answer in answers.values()} == {"ACK"}
        seqs = [answers[text]["seq"] for text in texts]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(texts)
        assert (answers["retry"]["id"], answers["retry"]["seq"]) == (answers["p2"]["id"], answers["p2"]["seq"])
        await watcher.wait_until(lambda: len(watcher.messages(room["id"])) == len(texts))
        await sender.send_chat(room["id"], "marker", client_msg_id="c-marker")
        await watcher.wait_until(lambda: watcher.messages(room["id"])[-1]["text"] == "marker")
        assert [m["text"] for m in watcher.messages(room["id"])] == [*texts, "marker"]


async def test_room_created_reaches_subscribers_on_every_node(cluster):
    a, b, c = cluster.urls
    async with connect(b, "lister") as lister, connect(c, "lister2") as lister2:
        for client in (lister, lister2):
            await client.send(type="SUBSCRIBE", destination="/topic/rooms", ref="rooms")
            await client.wait_for(lambda f: f.get("ref") == "rooms")
        token = await login(a, "creator")
        room = await create_room(a, token, "announced")
        for client in (lister, lister2):
            frame = await client.wait_for(lambda f: f["type"] == "ROOM_CREATED" and f["room"]["id"] == room["id"])
            assert frame["room"]["name"] == "announced"
            assert frame["room"]["createdBy"] == "creator"


async def test_join_and_leave_once_per_user_not_per_tab(cluster):
    a, b, _ = cluster.urls
    token = await login(a, "host")
    room = await create_room(a, token, "presence")
    async with connect(a, "host", token) as host:
        await host.subscribe(room["id"])
        await host.wait_for(lambda f: f["type"] == "ROOM_MESSAGE" and f["message"]["kind"] == "join")
        async with connect(a, "guest") as tab1, connect(b, "guest") as tab2:
            await tab1.subscribe(room["id"])
            await tab2.subscribe(room["id"])
            await host.wait_for(
                lambda f: (
                    f["type"] == "ROOM_MESSAGE"
                    and f["message"]["kind"] == "join"
                    and f["message"]["senderId"] == "guest"
                )
            )
            async with httpx.AsyncClient(base_url=b) as http:
                members = (await http.get(f"/api/room/{room['id']}/members")).json()["data"]["members"]
            assert sorted(members) == ["guest", "host"]
        # Each node announces presence changes in the order they happen, so once a later visitor's
        # join from each node has arrived, a second join or an early leave of the guest would have.
        for url, marker in ((a, "marker-a"), (b, "marker-b")):
            async with connect(url, marker) as visitor:
                await visitor.subscribe(room["id"])
                await host.wait_for(
                    lambda f, marker=marker: (
                        f["type"] == "ROOM_MESSAGE"
                        and f["message"]["kind"] == "join"
                        and f["message"]["senderId"] == marker
                    )
                )
        joins = [m for m in host.messages(room["id"], kind="join") if m["senderId"] == "guest"]
        assert len(joins) == 1
        assert [
            m for m in host.messages(room["id"], kind="leave") if m["senderId"] == "guest"
        ] == []  # within the grace
