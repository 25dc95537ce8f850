"""The outbox relay survives the death of the node holding its lock."""

from __future__ import annotations

import httpx
import trio
from client import connect, create_room, login

ROOMS = 40


async def lock_holder(cluster) -> int | None:
    async with httpx.AsyncClient(timeout=5) as http:
        for index, node in enumerate(cluster.nodes):
            if not node.alive:
                continue
            metrics = (await http.get(f"{node.internal_url}/metrics")).text
            if "chattrio_outbox_lock_held 1" in metrics:
                return index
    return None


async def wait_for_holder(cluster, timeout: float = 20.0) -> int:
    with trio.fail_after(timeout):
        while (holder := await lock_holder(cluster)) is None:
            await trio.sleep(0.2)
    return holder


async def test_killing_the_lock_holder_loses_and_duplicates_nothing(make_cluster, stack):
    cluster = await make_cluster(3)
    holder = await wait_for_holder(cluster)
    others = [i for i in range(3) if i != holder]
    watcher_node, writer_node = cluster.nodes[others[0]], cluster.nodes[others[1]]
    created_rooms, created_users = [], []

    async with connect(watcher_node.url, "outbox-watcher") as watcher:
        await watcher.send(type="SUBSCRIBE", destination="/topic/rooms", ref="rooms")
        await watcher.wait_for(lambda f: f.get("ref") == "rooms")
        async with httpx.AsyncClient(base_url=writer_node.url, timeout=10) as http:
            for n in range(ROOMS):
                if n == ROOMS // 3:
                    cluster.nodes[holder].kill()
                user = f"{cluster.prefix}-u{n}"
                token = (await http.post(f"/api/user/enter/{user}")).json()["data"]["token"]
                created_users.append(user)
                response = await http.post(
                    "/api/room", json={"name": f"outbox {n}"}, headers={"Authorization": f"Bearer {token}"}
                )
                assert response.status_code == 201
                created_rooms.append(response.json()["data"]["id"])
                await trio.sleep(0.02)

        def announced() -> list[int]:
            return [f["room"]["id"] for f in watcher.frames if f["type"] == "ROOM_CREATED"]

        await watcher.wait_until(lambda: set(created_rooms) <= set(announced()), timeout=45)
        # Every room is announced, so the new holder has already re-published (and had
        # acknowledged) any row the old one published without marking it: a duplicate reaches
        # the one test broker before this later room, and the PONG follows the batch it came in.
        marker = (await create_room(writer_node.url, await login(writer_node.url, "outbox-marker"), "marker"))["id"]
        await watcher.wait_until(lambda: marker in announced(), timeout=45)
        await watcher.send(type="PING", ref="after-marker")
        await watcher.wait_for(lambda f: f["type"] == "PONG" and f.get("ref") == "after-marker")
        mine = [room_id for room_id in announced() if room_id in set(created_rooms)]
        assert sorted(mine) == sorted(created_rooms), "each room announced exactly once"

    new_holder = await wait_for_holder(cluster)
    assert new_holder != holder
    with trio.fail_after(20):
        while True:
            cached_rooms = set((await stack.redis_cli("HKEYS", f"{cluster.prefix}:rooms")).split())
            cached_users = set((await stack.redis_cli("SMEMBERS", f"{cluster.prefix}:users")).split())
            if {str(r) for r in created_rooms} <= cached_rooms and set(created_users) <= cached_users:
                break
            await trio.sleep(0.5)
