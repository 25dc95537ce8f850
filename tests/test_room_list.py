"""GET /api/room: pages newest first with a cursor, a case-insensitive name search, bounds.

The rooms table is shared by every test run, so each test searches for its own unique tag."""

from __future__ import annotations

import uuid

import httpx
import pytest
import trio
from client import connect, create_room, login


def _tag() -> str:
    return f"rl{uuid.uuid4().hex[:10]}"


async def _page(http: httpx.AsyncClient, **params) -> dict:
    response = await http.get("/api/room", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def test_pages_follow_the_cursor_newest_first_each_room_once(cluster):
    tag = _tag()
    token = await login(cluster.urls[0], f"u{tag}")
    created = [await create_room(cluster.urls[0], token, f"{tag} room {k}") for k in range(5)]
    async with httpx.AsyncClient(base_url=cluster.urls[1], timeout=10) as http:
        pages, cursor = [], None
        while True:
            data = await _page(http, q=tag, limit=2, **({"cursor": cursor} if cursor else {}))
            pages.append([room["id"] for room in data["rooms"]])
            assert data["hasMore"] is (data["nextCursor"] is not None)
            if not data["hasMore"]:
                break
            cursor = data["nextCursor"]
    assert pages == [[created[4]["id"], created[3]["id"]], [created[2]["id"], created[1]["id"]], [created[0]["id"]]]


async def test_without_parameters_a_page_of_50_newest_first(cluster):
    tag = _tag()
    token = await login(cluster.urls[0], f"u{tag}")
    newest = await create_room(cluster.urls[0], token, f"{tag} newest")
    for _ in range(50 - 1):  # the shared table may hold fewer rooms than a page
        await create_room(cluster.urls[0], token, f"{tag} filler")
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        data = await _page(http)
    ids = [room["id"] for room in data["rooms"]]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    assert ids[0] >= newest["id"]
    assert set(data["rooms"][0]) == {"id", "name", "createdBy", "createdAt", "memberCount"}


async def test_search_is_a_case_insensitive_substring_with_wildcards_taken_literally(cluster):
    tag = _tag()
    token = await login(cluster.urls[0], f"u{tag}")
    mixed = await create_room(cluster.urls[0], token, f"Team {tag.upper()} Chat")
    percent = await create_room(cluster.urls[0], token, f"{tag} 100% done")
    underscore = await create_room(cluster.urls[0], token, f"{tag} a_b")
    plain = await create_room(cluster.urls[0], token, f"{tag} 100x axb")  # what unescaped % and _ would match
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:

        async def found(q: str) -> list[int]:
            return [room["id"] for room in (await _page(http, q=q))["rooms"]]

        assert await found(f"{tag} chat") == [mixed["id"]]
        assert await found(f"  {tag[2:].upper()} CHAT  ") == [mixed["id"]]
        assert await found(f"{tag} 100%") == [percent["id"]]
        assert await found(f"{tag} a_b") == [underscore["id"]]
        assert await found(tag) == [plain["id"], underscore["id"], percent["id"], mixed["id"]]
        assert await found(f"{tag}-nothing") == []


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"limit": "0"}, "limit must be between 1 and 200"),
        ({"limit": "201"}, "limit must be between 1 and 200"),
        ({"limit": "many"}, "limit must be an integer"),
        ({"cursor": "-5"}, "cursor"),
        ({"cursor": "abc"}, "cursor"),
        ({"q": "x" * 101}, "at most 100"),
        ({"q": "a\x00b"}, "control"),
        ({"q": "a\x1bb"}, "control"),
    ],
)
async def test_bad_parameters_are_400_with_a_reason(cluster, params, reason):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.get("/api/room", params=params)
    assert response.status_code == 400
    assert reason in response.json()["message"]


async def test_a_page_of_200_is_allowed(cluster):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        data = await _page(http, limit=200)
    assert len(data["rooms"]) <= 200


async def test_a_room_by_id_carries_its_member_count(cluster):
    tag = _tag()
    user = f"u{tag}"
    token = await login(cluster.urls[0], user)
    room = await create_room(cluster.urls[0], token, f"{tag} counted")
    async with httpx.AsyncClient(base_url=cluster.urls[1], timeout=10) as http:
        assert (await http.get(f"/api/room/{room['id']}")).json()["data"]["memberCount"] == 0
        async with connect(cluster.urls[0], user, token) as client:
            assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
            with trio.fail_after(15):  # presence is written as the room is entered: wait for it to show
                while (await http.get(f"/api/room/{room['id']}")).json()["data"]["memberCount"] != 1:
                    await trio.sleep(0.1)
