"""READ positions and TYPING across real nodes: stored first, told to the user's other sessions,
counted in the room list; typing reaches the other members on every node, is rate-limited, and is
never stored or replayed."""

from __future__ import annotations

import uuid

import httpx
import trio
from client import connect, create_room, login


def _user(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def _metric(node, name: str) -> float:
    async with httpx.AsyncClient(base_url=node.internal_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def _rooms(base_url: str, token: str | None, **params) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get("/api/room", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {room["id"]: room for room in response.json()["data"]["rooms"]}


async def _listed_when(base_url: str, token: str, room_id: int, condition, timeout: float = 30.0) -> dict:
    """The room as listed, once `condition` holds: unread is counted from storage, which follows
    the fan-out by a moment."""
    with trio.fail_after(timeout):
        while not condition(room := (await _rooms(base_url, token))[room_id]):
            await trio.sleep(0.1)
    return room


async def _pong(client, ref: str) -> None:
    """A round trip: whatever the node sent before the PONG has arrived."""
    await client.send(type="PING", ref=ref)
    await client.wait_for(lambda f: f["type"] == "PONG" and f.get("ref") == ref)


async def test_a_read_on_one_node_reaches_the_same_users_session_on_another(cluster):
    a, b, _ = cluster.urls
    reader = _user("reader")
    token = await login(a, reader)
    room = await create_room(a, token, "read-sync")
    async with connect(a, reader, token) as tab_a, connect(b, reader, token) as tab_b:
        for tab in (tab_a, tab_b):
            await tab.subscribe(room["id"])
        ack = await tab_a.send_chat(room["id"], "read me", client_msg_id="m1")
        await tab_b.wait_until(lambda: len(tab_b.messages(room["id"])) == 1)
        await tab_a.send(type="READ", roomId=room["id"], seq=ack["seq"], ref="read-1")
        for tab in (tab_a, tab_b):
            moved = await tab.wait_for(lambda f: f["type"] == "READ_POSITION")
            assert moved == {"type": "READ_POSITION", "roomId": room["id"], "lastReadSeq": ack["seq"]}


async def test_a_read_position_never_moves_back_and_a_repeat_announces_nothing(cluster):
    a, b, _ = cluster.urls
    reader = _user("back")
    token = await login(a, reader)
    room = await create_room(a, token, "read-back")
    async with connect(a, reader, token) as tab_a, connect(b, reader, token) as tab_b:
        for tab in (tab_a, tab_b):
            await tab.subscribe(room["id"])
        first = await tab_a.send_chat(room["id"], "one", client_msg_id="m1")
        second = await tab_a.send_chat(room["id"], "two", client_msg_id="m2")
        await tab_a.send(type="READ", roomId=room["id"], seq=second["seq"])
        await tab_b.wait_for(lambda f: f["type"] == "READ_POSITION" and f["lastReadSeq"] == second["seq"])
        await tab_a.send(type="READ", roomId=room["id"], seq=first["seq"])
        await tab_a.send(type="READ", roomId=room["id"], seq=second["seq"])
        # a later read that moves it is the marker: nothing came for the two before it
        third = await tab_a.send_chat(room["id"], "three", client_msg_id="m3")
        await tab_a.send(type="READ", roomId=room["id"], seq=third["seq"])
        await tab_b.wait_for(lambda f: f["type"] == "READ_POSITION" and f["lastReadSeq"] == third["seq"])
        moves = [f["lastReadSeq"] for f in tab_b.frames if f["type"] == "READ_POSITION"]
        assert moves == [second["seq"], third["seq"]]
    listed = await _rooms(a, token)
    assert listed[room["id"]]["lastReadSeq"] == third["seq"]


async def test_the_room_list_carries_unread_and_last_read_seq_for_a_signed_in_user(cluster):
    a, b, _ = cluster.urls
    reader, talker = _user("lister"), _user("talker")
    token = await login(a, reader)
    room = await create_room(a, token, "unread-count")
    async with connect(a, reader, token) as me, connect(b, talker) as other:
        await me.subscribe(room["id"])
        await other.subscribe(room["id"])
        first = await other.send_chat(room["id"], "before", client_msg_id="b1")
        await me.wait_until(lambda: len(me.messages(room["id"])) == 1)
        never_read = (await _rooms(a, token))[room["id"]]
        assert never_read["unread"] == 0 and never_read["lastReadSeq"] is None
        await me.send(type="READ", roomId=room["id"], seq=first["seq"])
        await me.wait_for(lambda f: f["type"] == "READ_POSITION")
        for n in range(3):
            await other.send_chat(room["id"], f"after {n}", client_msg_id=f"a{n}")
        await me.send_chat(room["id"], "my own does not count", client_msg_id="own")
        await me.wait_until(lambda: len(me.messages(room["id"])) == 5)
    listed = await _listed_when(b, token, room["id"], lambda r: r["unread"] == 3)
    assert listed["lastReadSeq"] == first["seq"]
    anonymous = (await _rooms(a, None))[room["id"]]
    assert "unread" not in anonymous and "lastReadSeq" not in anonymous


async def test_the_unread_count_stops_at_the_cap(cluster):
    a, _, _ = cluster.urls
    reader, talker = _user("capped"), _user("flood")
    token = await login(a, reader)
    room = await create_room(a, token, "unread-cap")
    async with connect(a, reader, token) as me, connect(a, talker) as other:
        await me.subscribe(room["id"])
        await other.subscribe(room["id"])
        first = await other.send_chat(room["id"], "first", client_msg_id="f")
        await me.wait_until(lambda: len(me.messages(room["id"])) == 1)
        await me.send(type="READ", roomId=room["id"], seq=first["seq"])
        await me.wait_for(lambda f: f["type"] == "READ_POSITION")
        for n in range(105):
            await other.send_chat(room["id"], f"n{n}", client_msg_id=f"n{n}")
    await _listed_when(a, token, room["id"], lambda r: r["unread"] == 100)


async def test_bad_reads_are_refused_and_the_connection_stays(cluster):
    a, _, _ = cluster.urls
    reader = _user("bad")
    token = await login(a, reader)
    room = await create_room(a, token, "bad-read")
    async with connect(a, reader, token) as me:
        await me.send(type="READ", roomId=room["id"], seq=1, ref="not-in")
        refused = await me.wait_for(lambda f: f.get("ref") == "not-in")
        assert refused["type"] == "ERROR" and refused["code"] == "NOT_SUBSCRIBED"
        await me.subscribe(room["id"])
        ack = await me.send_chat(room["id"], "only", client_msg_id="o")
        await me.send(type="READ", roomId=room["id"], seq=ack["seq"] + 1_000_000, ref="future")
        future = await me.wait_for(lambda f: f.get("ref") == "future")
        assert future["type"] == "ERROR" and future["code"] == "BAD_FRAME" and "beyond" in future["message"]
        for bad, ref in (({"seq": -1}, "neg"), ({"seq": "7"}, "str"), ({}, "missing")):
            await me.send(type="READ", roomId=room["id"], ref=ref, **bad)
            answer = await me.wait_for(lambda f, ref=ref: f.get("ref") == ref)
            assert answer["type"] == "ERROR" and answer["code"] == "BAD_FRAME"
        await _pong(me, "alive")
        assert not [f for f in me.frames if f["type"] == "READ_POSITION"]


async def test_typing_reaches_the_other_members_on_every_node_but_not_the_typist(cluster):
    a, b, c = cluster.urls
    typist, ben, cat = _user("typist"), _user("ben"), _user("cat")
    token = await login(a, typist)
    room = await create_room(a, token, "typing")
    async with connect(a, typist, token) as me, connect(a, typist, token) as my_tab, connect(b, ben) as b_client:
        async with connect(c, cat) as c_client:
            for client in (me, my_tab, b_client, c_client):
                await client.subscribe(room["id"])
            await me.send(type="TYPING", roomId=room["id"])
            for client in (b_client, c_client):
                typing = await client.wait_for(lambda f: f["type"] == "TYPING")
                assert typing == {"type": "TYPING", "roomId": room["id"], "userId": typist}
            # the typist's own sessions are not told; a message through the same fan-out is the marker
            await b_client.send_chat(room["id"], "marker", client_msg_id="mk")
            for tab in (me, my_tab):
                await tab.wait_until(lambda tab=tab: len(tab.messages(room["id"])) == 1)
                assert not [f for f in tab.frames if f["type"] == "TYPING"]


async def test_typing_more_often_than_every_3_s_is_ignored_and_counted(cluster):
    a, b, _ = cluster.urls
    node_a = cluster.nodes[0]
    typist, watcher = _user("fast"), _user("watch")
    token = await login(a, typist)
    room = await create_room(a, token, "typing-fast")
    async with connect(a, typist, token) as me, connect(b, watcher) as other:
        await me.subscribe(room["id"])
        await other.subscribe(room["id"])
        ignored_before = await _metric(node_a, "chattrio_typing_ignored_total")
        for _ in range(5):
            await me.send(type="TYPING", roomId=room["id"])
        await _pong(me, "after-typing")
        assert await _metric(node_a, "chattrio_typing_ignored_total") - ignored_before == 4
        await other.wait_for(lambda f: f["type"] == "TYPING")
        await me.send_chat(room["id"], "marker", client_msg_id="mk")
        await other.wait_until(lambda: len(other.messages(room["id"])) == 1)
        assert len([f for f in other.frames if f["type"] == "TYPING"]) == 1
        await me.send(type="TYPING", roomId=999_999_999, ref="nowhere")
        refused = await me.wait_for(lambda f: f.get("ref") == "nowhere")
        assert refused["type"] == "ERROR" and refused["code"] == "NOT_SUBSCRIBED"


async def test_typing_is_neither_stored_nor_replayed(cluster):
    a, b, _ = cluster.urls
    typist, watcher = _user("quiet"), _user("late")
    token = await login(a, typist)
    room = await create_room(a, token, "typing-not-kept")
    async with connect(a, typist, token) as me, connect(b, watcher) as live:
        await me.subscribe(room["id"])
        await live.subscribe(room["id"])
        await me.send(type="TYPING", roomId=room["id"])
        await live.wait_for(lambda f: f["type"] == "TYPING")
        ack = await me.send_chat(room["id"], "after typing", client_msg_id="t1")
        await live.wait_until(lambda: len(live.messages(room["id"])) == 1)
    async with connect(b, watcher) as late:
        subscribed = await late.subscribe(room["id"], since=-1)
        assert subscribed["type"] == "SUBSCRIBED"
        assert [m["text"] for m in late.messages(room["id"], kind=None) if m["kind"] == "chat"] == ["after typing"]
        assert not [f for f in late.frames if f["type"] == "TYPING"]
    # stored once the message sent after the typing is: nothing else of that moment is
    history = await _stored_up_to(a, room["id"], ack["seq"])
    assert [(m["kind"], m["text"]) for m in history if m["kind"] == "chat"] == [("chat", "after typing")]
    assert {m["kind"] for m in history} <= {"chat", "join", "leave"}


async def _stored_up_to(base_url: str, room_id: int, seq: int, timeout: float = 30.0) -> list[dict]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        with trio.fail_after(timeout):
            while True:
                history = (await http.get(f"/api/room/{room_id}/messages")).json()["data"]
                if any(m["seq"] >= seq for m in history):
                    return history
                await trio.sleep(0.1)
