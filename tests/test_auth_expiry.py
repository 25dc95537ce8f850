"""The auth-expiry contract: `GET /api/me` tells a refused token (401) from an unreachable node, and
a WebSocket session is closed with 4001 when its token's `exp` passes."""

from __future__ import annotations

import uuid

import httpx
import trio
from client import bearer, login
from conftest import TEST_SECRET
from test_identity import _closed, _session_info, raw_client

from chattrio.tokens import issue_token

CLOSE_TOKEN_EXPIRED = 4001
# Long enough for the handshake and a PING on a busy machine; the test waits for the close, not a time.
SHORT_TTL_SECONDS = 6


def _user() -> str:
    return f"exp{uuid.uuid4().hex[:12]}"


async def test_me_answers_the_tokens_user_and_expiry(cluster):
    user = _user()
    token = await login(cluster.urls[0], user)
    async with httpx.AsyncClient(base_url=cluster.urls[1], timeout=10) as http:
        by_header = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert by_header.status_code == 200
        assert by_header.json()["data"]["userId"] == user
        assert by_header.json()["data"]["expiresAt"] > 0
        http.cookies.set("chattrio_token", token)
        assert (await http.get("/api/me")).json()["data"]["userId"] == user


async def test_me_refuses_a_missing_bad_or_expired_token_with_401(cluster):
    expired, _ = issue_token(_user(), TEST_SECRET, -10)
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Bearer {expired}"}):
            response = await http.get("/api/me", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["success"] is False and response.json()["message"]


async def test_a_session_is_closed_with_4001_when_its_header_token_expires(cluster):
    user = _user()
    await login(cluster.urls[0], user)
    token, _ = issue_token(user, TEST_SECRET, SHORT_TTL_SECONDS)
    async with raw_client(cluster.urls[0], user, headers=bearer(token)) as client:
        await _session_info(client)
        await client.send(type="PING", ref="alive")
        await client.wait_for(lambda f: f.get("ref") == "alive")
        code, reason = await _closed(client)
    assert (code, reason) == (CLOSE_TOKEN_EXPIRED, "token expired")


async def test_a_session_is_closed_with_4001_when_its_auth_frame_token_expires(cluster):
    user = _user()
    await login(cluster.urls[0], user)
    token, _ = issue_token(user, TEST_SECRET, SHORT_TTL_SECONDS)
    async with raw_client(cluster.urls[1], user) as client:
        await client.send(type="AUTH", token=token)
        await _session_info(client)
        code, reason = await _closed(client)
    assert (code, reason) == (CLOSE_TOKEN_EXPIRED, "token expired")


async def test_a_session_with_a_long_token_stays_open(cluster):
    user = _user()
    token = await login(cluster.urls[0], user)
    async with raw_client(cluster.urls[0], user, headers=bearer(token)) as client:
        await _session_info(client)
        with trio.fail_after(10):
            await client.send(type="PING", ref="still-here")
            await client.wait_for(lambda f: f.get("ref") == "still-here")
        assert client.closed is None
