"""Presence across nodes: members, "left" after the grace period, a dead node's users expire,
and presence going on while Kafka (which carries the join and leave messages) is away."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import trio
from client import connect, create_room, login


async def members(base_url: str, room_id: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        return (await http.get(f"/api/room/{room_id}/members")).json()["data"]["members"]


async def announcements_given_up(node) -> float:
    """Joins and leaves the node could not produce (chattrio_announcements_dropped_total)."""
    async with httpx.AsyncClient(base_url=node.internal_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("chattrio_announcements_dropped")
    )


def system_messages(client, room_id: int, user: str) -> list[str]:
    return [m["kind"] for m in client.messages(room_id, kind=None) if m["kind"] != "chat" and m["senderId"] == user]


@asynccontextmanager
async def watching_a_new_room(cluster, watcher: str, room_name: str):
    """`watcher` logged in on the first node, in a room of its own; yields (client, room)."""
    url = cluster.urls[0]
    token = await login(url, watcher)
    room = await create_room(url, token, room_name)
    async with connect(url, watcher, token) as client:
        await client.subscribe(room["id"])
        yield client, room


@asynccontextmanager
async def visiting(url: str, visitor: str, room, watcher):
    """`visitor` in the room through `url`, once `watcher` has seen them join."""
    async with connect(url, visitor) as client:
        await client.subscribe(room["id"])
        await watcher.wait_until(lambda: system_messages(watcher, room["id"], visitor) == ["join"])
        yield


async def came_and_went(url: str, visitor: str, room, watcher) -> None:
    """`visitor` enters through `url` and leaves; returns once `watcher` has seen the leave. A
    node decides leaves in the order their grace periods end, so by then any leave that node
    owed for someone who left earlier has been announced too."""
    async with visiting(url, visitor, room, watcher):
        pass
    await watcher.wait_until(lambda: system_messages(watcher, room["id"], visitor) == ["join", "leave"], timeout=15)


async def test_leave_after_grace_and_not_on_a_quick_reconnect(make_cluster):
    cluster = await make_cluster(2, leave_grace_seconds=2, presence_ttl_seconds=6)
    a, b = cluster.urls
    async with watching_a_new_room(cluster, "stayer", "grace") as (stayer, room):
        async with visiting(b, "hopper", room, stayer):
            pass  # in, seen joining, and gone again
        # gone, and back within the grace period on the other node: neither left nor joined again
        async with connect(a, "hopper") as hopper:
            await hopper.subscribe(room["id"])
            await came_and_went(b, "marker-b", room, stayer)  # node b, which hopper left, has decided
            assert system_messages(stayer, room["id"], "hopper") == ["join"]
            assert "hopper" in await members(b, room["id"])
        # gone for longer than the grace period: one "left"
        await stayer.wait_until(lambda: system_messages(stayer, room["id"], "hopper") == ["join", "leave"], timeout=15)
        assert await members(a, room["id"]) == ["stayer"]
        async with trio.open_nursery() as nursery:  # a second leave would come from either node
            nursery.start_soon(came_and_went, a, "marker-a2", room, stayer)
            nursery.start_soon(came_and_went, b, "marker-b2", room, stayer)
        assert system_messages(stayer, room["id"], "hopper") == ["join", "leave"]


async def test_users_of_a_killed_node_expire_from_presence(make_cluster):
    cluster = await make_cluster(2, leave_grace_seconds=1, presence_ttl_seconds=3)
    a, b = cluster.urls
    async with watching_a_new_room(cluster, "survivor", "expiry") as (survivor, room):
        async with visiting(b, "doomed", room, survivor):
            assert sorted(await members(a, room["id"])) == ["doomed", "survivor"]
            cluster.nodes[1].kill()
            with trio.fail_after(15):
                while "doomed" in await members(a, room["id"]):
                    await trio.sleep(0.3)
            await survivor.wait_until(
                lambda: system_messages(survivor, room["id"], "doomed") == ["join", "leave"], timeout=10
            )


async def test_presence_goes_on_while_kafka_is_away(make_cluster, stack):
    """Entering does not wait for Kafka: every visitor is listed while Kafka is down (their joins
    wait, retried, since the first of them cannot be produced). Once Kafka is back, each join
    is announced, once."""
    # A long TTL puts heartbeats 30 s apart, so within the test only entering can show the users.
    cluster = await make_cluster(1, presence_ttl_seconds=90)
    url = cluster.urls[0]
    room = await create_room(url, await login(url, "kafkaless-host"), "kafkaless")
    visitors = [f"kafkaless-{n}" for n in range(6)]
    await stack.stop("kafka")
    try:
        async with AsyncExitStack() as clients:
            connected = []
            for name in visitors:
                client = await clients.enter_async_context(connect(url, name))
                assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
                connected.append(client)
            with trio.fail_after(120):  # a hang guard only: Kafka is still down meanwhile
                while await members(url, room["id"]) != sorted(visitors):
                    await trio.sleep(0.2)
            await stack.start("kafka")
            last = connected[-1]
            await last.wait_until(
                lambda: all(system_messages(last, room["id"], name) == ["join"] for name in visitors[:-1]),
                timeout=60,
            )
            assert await announcements_given_up(cluster.nodes[0]) == 0
    finally:
        await stack.start("kafka")  # already running unless the test failed before it started it
    assert all(node.alive for node in cluster.nodes)
