"""Redis, PostgreSQL or Kafka goes away: the nodes stay up, chat degrades as promised, all recovers."""

from __future__ import annotations

import subprocess
from contextlib import asynccontextmanager

import httpx
import trio
from client import connect, create_room, login
from test_failover import stored_messages

from chattrio.roomlog import RECENT_PER_ROOM


@asynccontextmanager
async def two_people_in_a_room(cluster, name: str):
    """Alice on the first node and Bob on the second, both in a new room: (alice, bob, room)."""
    a, b = cluster.urls[:2]
    token = await login(a, f"{name}-a")
    room = await create_room(a, token, name)
    async with connect(a, f"{name}-a", token) as alice, connect(b, f"{name}-b") as bob:
        await alice.subscribe(room["id"])
        await bob.subscribe(room["id"])
        yield alice, bob, room


async def test_without_redis_chat_goes_on(make_cluster, stack):
    cluster = await make_cluster(2)
    b = cluster.urls[1]
    async with two_people_in_a_room(cluster, "no-redis") as (alice, bob, room):
        await stack.stop("redis")
        try:
            for n in range(5):
                ack = await alice.send_chat(room["id"], f"redis down {n}", client_msg_id=f"rd-{n}")
                assert ack["type"] == "ACK"
            await bob.wait_until(lambda: len(bob.messages(room["id"])) == 5)
            # a new user can still sign up and enter the room (nothing reads Redis to validate)
            async with connect(b, "no-redis-c") as carol:
                assert (await carol.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        finally:
            await stack.start("redis")
        ack = await bob.send_chat(room["id"], "redis back", client_msg_id="rd-back")
        assert ack["type"] == "ACK"
        await alice.wait_until(lambda: any(m["text"] == "redis back" for m in alice.messages(room["id"])))
    assert all(node.alive for node in cluster.nodes)


async def test_without_postgres_signup_is_503_and_chat_goes_on(make_cluster, stack):
    cluster = await make_cluster(2)
    a, b = cluster.urls[:2]
    async with two_people_in_a_room(cluster, "no-pg") as (alice, bob, room):
        await stack.stop("postgres")
        try:
            async with httpx.AsyncClient(base_url=b, timeout=20) as http:
                response = await http.post(f"/api/user/enter/{cluster.prefix}-late")
            assert response.status_code == 503
            assert response.json()["success"] is False
            acks = [await alice.send_chat(room["id"], f"pg down {n}", client_msg_id=f"pd-{n}") for n in range(5)]
            assert all(ack["type"] == "ACK" for ack in acks)
            await bob.wait_until(lambda: len(bob.messages(room["id"])) == 5)
        finally:
            await stack.start("postgres")
    with trio.fail_after(60):
        while True:
            stored = [m["text"] for m in await stored_messages(a, room["id"]) if m["kind"] == "chat"]
            if len(stored) == 5:
                break
            await trio.sleep(0.5)
    assert stored == [f"pg down {n}" for n in range(5)]
    async with httpx.AsyncClient(base_url=b, timeout=20) as http:
        assert (await http.post(f"/api/user/enter/{cluster.prefix}-late")).status_code == 201
    assert all(node.alive for node in cluster.nodes)


async def test_without_kafka_send_fails_fast_and_recovers(make_cluster, stack):
    cluster = await make_cluster(2)
    async with two_people_in_a_room(cluster, "no-kafka") as (alice, bob, room):
        await stack.stop("kafka")
        try:
            # An answer, not silence: the node gives up on the broker and says so.
            reply = await alice.send_chat(room["id"], "into the void", client_msg_id="nk-1")
            assert reply["type"] == "ERROR" and reply["code"] == "UNAVAILABLE"
        finally:
            await stack.start("kafka")
        with trio.fail_after(90):
            while True:
                reply = await alice.send_chat(
                    room["id"], "kafka back", client_msg_id="nk-2", ref=f"r{trio.current_time()}"
                )
                if reply["type"] == "ACK":
                    break
                await trio.sleep(1)
        await bob.wait_until(lambda: any(m["text"] == "kafka back" for m in bob.messages(room["id"])), timeout=60)
    assert all(node.alive for node in cluster.nodes)


def resume_point(client, room: int, since: int) -> int:
    """Where a client resumes after a refused SUBSCRIBE: what the refused replay already sent
    stands (docs/protocol.md), so after the highest seq it holds."""
    return max([since] + [m["seq"] for m in client.messages(room)])


async def resume_until_subscribed(client, room: int, since: int, timeout: float) -> None:
    """SUBSCRIBE again, from what the refused replays sent, while the node answers UNAVAILABLE."""
    with trio.fail_after(timeout):
        attempt = 0
        while (reply := await client.subscribe(room, since=resume_point(client, room, since), ref=f"retry-{attempt}"))[
            "type"
        ] != "SUBSCRIBED":
            assert reply["code"] == "UNAVAILABLE", reply
            attempt += 1
            await trio.sleep(0.5)


async def test_a_resume_from_before_the_room_log_never_skips_what_is_not_stored_yet(make_cluster, stack):
    """More messages than a node's room log holds arrive while PostgreSQL is down. A resume from
    before them must not jump from the last stored message to the log: the node answers
    UNAVAILABLE while storage lacks the messages in between, and replays them all once it has
    caught up, on the same connection."""
    cluster = await make_cluster(2)
    a, b = cluster.urls[:2]
    tokens = {name: await login(a if name == "alice" else b, f"gap-{name}") for name in ("alice", "bob", "carol")}
    room = (await create_room(a, tokens["alice"], "gap"))["id"]
    total = RECENT_PER_ROOM + 44
    async with connect(a, "gap-alice", tokens["alice"]) as alice, connect(b, "gap-carol", tokens["carol"]) as carol:
        await alice.subscribe(room)
        await carol.subscribe(room)
        assert (await alice.send_chat(room, "stored", client_msg_id="gap-stored"))["type"] == "ACK"
        await carol.wait_until(lambda: len(carol.messages(room)) == 1)
        since = carol.messages(room)[0]["seq"]
        with trio.fail_after(30):
            while not any(m["text"] == "stored" for m in await stored_messages(a, room)):
                await trio.sleep(0.2)
        await stack.stop("postgres")
        try:
            for n in range(total):
                assert (await alice.send_chat(room, f"gap {n}", client_msg_id=f"gap-{n}"))["type"] == "ACK"
            await carol.wait_until(lambda: len(carol.messages(room)) == total + 1)  # node b's log dropped some
            async with connect(b, "gap-bob", tokens["bob"]) as bob:
                refused = await bob.subscribe(room, since=since, ref="early")
                assert refused["type"] == "ERROR" and refused["code"] == "UNAVAILABLE", refused
                assert bob.messages(room) == []  # nothing of the burst before the gap is filled
                await stack.start("postgres")
                await resume_until_subscribed(bob, room, since, timeout=90)
                await bob.wait_until(lambda: len(bob.messages(room)) >= total)
                assert [m["text"] for m in bob.messages(room)] == [f"gap {n}" for n in range(total)]
        finally:
            await stack.start("postgres")
    assert all(node.alive for node in cluster.nodes)


@asynccontextmanager
async def inserts_blocked(stack, table: str):
    """Hold an EXCLUSIVE lock on `table` from another session: reads go on, inserts wait."""
    dsn = stack.env["CHATTRIO_PG_DSN"]
    holder = await trio.lowlevel.open_process(
        ["psql", dsn, "-q"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    granted = (
        f"SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass AND mode = 'ExclusiveLock' AND granted"
    )
    assert holder.stdin is not None  # stdin=PIPE
    try:
        await holder.stdin.send_all(f"BEGIN; LOCK TABLE {table} IN EXCLUSIVE MODE;\n".encode())
        with trio.fail_after(10):
            while (await trio.run_process(["psql", dsn, "-Atc", granted], capture_stdout=True)).stdout.strip() != b"1":
                await trio.sleep(0.1)
        yield
    finally:
        with trio.move_on_after(10) as cleanup:
            cleanup.shield = True
            await holder.stdin.send_all(b"ROLLBACK;\n")
            await holder.stdin.aclose()
            await holder.wait()
        holder.kill()


async def test_a_resume_on_a_node_started_after_unstored_messages_waits_for_storage(make_cluster, stack):
    """A node's fan-out starts at the end of the log, so a node started after messages it never
    read holds none of them, and has dropped none either. A resume from before them must not end
    at the last stored message: the node answers UNAVAILABLE until storage has the room's
    partition up to where its fan-out started, then replays them."""
    cluster = await make_cluster(2)
    a, b = cluster.urls[:2]
    cluster.nodes[1].kill()
    tokens = {name: await login(a, f"late-{name}") for name in ("alice", "bob")}
    room = (await create_room(a, tokens["alice"], "late"))["id"]
    async with connect(a, "late-alice", tokens["alice"]) as alice:
        await alice.subscribe(room)
        assert (await alice.send_chat(room, "stored", client_msg_id="late-stored"))["type"] == "ACK"
        with trio.fail_after(30):
            while not (stored := [m for m in await stored_messages(a, room) if m["text"] == "stored"]):
                await trio.sleep(0.2)
        since = stored[0]["seq"]
        async with inserts_blocked(stack, "messages"):
            for n in range(5):
                assert (await alice.send_chat(room, f"late {n}", client_msg_id=f"late-{n}"))["type"] == "ACK"
            cluster.nodes[1].start()
            await trio.to_thread.run_sync(cluster.nodes[1].wait_ready)
            async with connect(b, "late-bob", tokens["bob"]) as bob:
                refused = await bob.subscribe(room, since=since, ref="early")
                assert refused["type"] == "ERROR" and refused["code"] == "UNAVAILABLE", refused
                assert bob.messages(room) == []
        async with connect(b, "late-bob", tokens["bob"]) as bob:
            await resume_until_subscribed(bob, room, since, timeout=60)
            await bob.wait_until(lambda: len(bob.messages(room)) >= 5)
            assert [m["text"] for m in bob.messages(room)] == [f"late {n}" for n in range(5)]
    assert all(node.alive for node in cluster.nodes)
