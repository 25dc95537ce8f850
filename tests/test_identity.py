"""Identity on real nodes: the auth modes, a node refusing unsafe token settings, and the WebSocket
authenticated by cookie, by header or by an AUTH frame, never by a token in the URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager

import httpx
import jwt
import pytest
import trio
from client import ChatClient, bearer, create_room, login
from conftest import REPO, SESSION_CLUSTER_BASE_PORT, TEST_SECRET, Cluster
from cryptography.hazmat.primitives.asymmetric import ec
from trio_websocket import open_websocket_url

from chattrio.frames import Auth, FrameError, parse_client_frame

# Clear of the session cluster (+1..3) and of make_cluster's isolated ones (+110 on).
JWT_CLUSTER_BASE_PORT = SESSION_CLUSTER_BASE_PORT + 700
START_REFUSED_PORT = SESSION_CLUSTER_BASE_PORT + 790
CLOSE_POLICY_VIOLATION = 1008


def _user(prefix: str = "id") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws"


@asynccontextmanager
async def raw_client(url: str, user_id: str = "", headers=None):
    """A WebSocket with its frames recorded, not waiting for session-info (an AUTH may be due)."""
    async with open_websocket_url(_ws(url), extra_headers=headers or []) as ws, trio.open_nursery() as nursery:
        client = ChatClient(ws, user_id)
        nursery.start_soon(client._read)
        yield client
        nursery.cancel_scope.cancel()


async def _closed(client: ChatClient, timeout: float = 30) -> tuple[int, str]:
    with trio.fail_after(timeout):
        while client.closed is None:
            await client._changed.wait()
    reason = client.closed.reason
    assert reason is not None
    return reason.code, reason.reason or ""


async def _session_info(client: ChatClient) -> dict:
    return await client.wait_for(lambda f: f["type"] == "session-info")


# The AUTH frame ---------------------------------------------------------------------------------


def test_auth_frame_parses():
    assert parse_client_frame('{"type": "AUTH", "token": "eyJ.a.b", "ref": "a"}') == Auth("eyJ.a.b", "a")
    assert parse_client_frame('{"type": "AUTH", "token": "' + "t" * 8192 + '"}') == Auth("t" * 8192)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "AUTH"},
        {"type": "AUTH", "token": ""},
        {"type": "AUTH", "token": 7},
        {"type": "AUTH", "token": "t" * 8193},
    ],
)
def test_bad_auth_frame_is_bad_frame(frame):
    with pytest.raises(FrameError) as exc:
        parse_client_frame(json.dumps(frame))
    assert exc.value.code == "BAD_FRAME"


# A node refuses unsafe token settings ------------------------------------------------------------


def _serve(**settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATTRIO_")}
    env.update({f"CHATTRIO_{k.upper()}": v for k, v in settings.items()}, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "chattrio", "serve", "--port", str(START_REFUSED_PORT), "--node-id", "refused"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"secret": ""},
        {"secret": "dev-secret-change-me"},
        {"secret": "too-short"},
        {"auth_mode": "jwt", "jwt_algorithm": "HS256"},
    ],
)
def test_node_refuses_to_start_with_the_default_empty_or_short_secret(settings):
    result = _serve(**settings)
    assert result.returncode == 1
    assert "node refused to start: CHATTRIO_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({"auth_mode": "ldap"}, "CHATTRIO_AUTH_MODE='ldap'"),
        ({"auth_mode": "jwt", "jwt_algorithm": "RS256"}, "needs CHATTRIO_JWKS_FILE"),
        ({"auth_mode": "jwt", "jwt_algorithm": "ES256", "jwks_file": "/nonexistent/jwks.json"}, "CHATTRIO_JWKS_FILE"),
    ],
)
def test_node_refuses_to_start_with_a_bad_auth_configuration(settings, reason):
    result = _serve(secret=TEST_SECRET, **settings)
    assert result.returncode == 1
    assert "node refused to start" in result.stderr and reason in result.stderr


# Open mode: the WebSocket's three ways to authenticate -------------------------------------------


async def test_auth_mode_is_published(cluster):
    response = httpx.get(f"{cluster.urls[0]}/api/auth", timeout=10)
    assert response.status_code == 200 and response.json()["data"] == {"mode": "open"}


async def test_websocket_authenticates_with_the_cookie_of_sign_up(cluster):
    user = _user()
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.post(f"/api/user/enter/{user}")
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        token = http.cookies["chattrio_token"]
    async with raw_client(cluster.urls[1], user, [(b"Cookie", f"chattrio_token={token}".encode())]) as client:
        assert (await _session_info(client))["userId"] == user


async def test_websocket_authenticates_with_an_authorization_header(cluster):
    user = _user()
    token = await login(cluster.urls[0], user)
    async with raw_client(cluster.urls[2], user, bearer(token)) as client:
        assert (await _session_info(client))["userId"] == user


async def test_header_token_wins_over_the_cookie(cluster):
    header_user, cookie_user = _user("h"), _user("c")
    header_token, cookie_token = await login(cluster.urls[0], header_user), await login(cluster.urls[0], cookie_user)
    headers = bearer(header_token) + [(b"Cookie", f"chattrio_token={cookie_token}".encode())]
    async with raw_client(cluster.urls[0], headers=headers) as client:
        assert (await _session_info(client))["userId"] == header_user


async def test_websocket_authenticates_with_an_auth_frame(cluster):
    user = _user()
    token = await login(cluster.urls[0], user)
    room = await create_room(cluster.urls[0], token, f"auth-frame-{uuid.uuid4().hex[:6]}")
    async with raw_client(cluster.urls[1], user) as client:
        await client.send(type="AUTH", token=token, ref="a1")
        assert (await _session_info(client))["userId"] == user
        assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        assert (await client.send_chat(room["id"], "after AUTH", "c-auth"))["type"] == "ACK"
        await client.send(type="AUTH", token=token, ref="a2")
        error = await client.wait_for(lambda f: f.get("ref") == "a2")
        assert error["type"] == "ERROR" and error["code"] == "BAD_FRAME" and "already" in error["message"]
        await client.send(type="PING", ref="still-open")
        assert (await client.wait_for(lambda f: f.get("ref") == "still-open"))["type"] == "PONG"


async def test_frames_sent_right_behind_the_auth_frame_are_served(cluster):
    user = _user()
    token = await login(cluster.urls[0], user)
    async with raw_client(cluster.urls[0], user) as client:
        await client.send(type="AUTH", token=token)
        await client.send(type="PING", ref="p")
        assert (await client.wait_for(lambda f: f.get("ref") == "p"))["type"] == "PONG"
        assert client.frames[0]["type"] == "session-info"


@pytest.mark.parametrize(
    "first_frame, reason",
    [
        ({"type": "AUTH", "token": "forged"}, "malformed token"),
        ({"type": "AUTH", "token": jwt.encode({"sub": "x", "exp": 1}, TEST_SECRET, algorithm="HS256")}, "expired"),
        ({"type": "AUTH", "token": ""}, "authenticate first"),
        ({"type": "PING", "ref": "p"}, "authenticate first"),
        ({"type": "SUBSCRIBE", "destination": "/topic/rooms"}, "authenticate first"),
        ("not json", "authenticate first"),
    ],
)
async def test_a_bad_or_missing_auth_frame_closes_with_1008(cluster, first_frame, reason):
    async with raw_client(cluster.urls[0]) as client:
        await client.ws.send_message(first_frame if isinstance(first_frame, str) else json.dumps(first_frame))
        code, why = await _closed(client)
    assert code == CLOSE_POLICY_VIOLATION and reason in why
    assert not any(f["type"] in ("session-info", "PONG", "SUBSCRIBED") for f in client.frames)


async def test_no_auth_frame_within_the_deadline_closes_with_1008(cluster):
    async with raw_client(cluster.urls[0]) as client:
        code, why = await _closed(client)
    assert code == CLOSE_POLICY_VIOLATION and "no AUTH frame" in why
    assert client.frames == []


async def test_token_in_the_url_is_refused(cluster):
    user = _user()
    token = await login(cluster.urls[0], user)
    ws_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        handshake = await http.get("/ws", params={"token": token}, headers=ws_headers)
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        rest = await http.post("/api/room", params={"token": token}, json={"name": "token in url"})
    for response in (handshake, rest):
        assert response.status_code == 400
        assert "token in the URL is refused" in response.json()["message"]


async def test_web_session_sets_and_clears_the_cookie(cluster):
    user = _user()
    token = await login(cluster.urls[0], user)
    async with httpx.AsyncClient(base_url=cluster.urls[1], timeout=10) as http:
        refused = await http.post("/api/auth/session")
        assert refused.status_code == 401 and "Authorization" in refused.json()["message"]
        response = await http.post("/api/auth/session", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["data"]["userId"] == user
        assert http.cookies["chattrio_token"] == token and "HttpOnly" in response.headers["set-cookie"]
        cleared = await http.delete("/api/auth/session")
        assert cleared.status_code == 200 and "Max-Age=0" in cleared.headers["set-cookie"]
        assert "chattrio_token" not in http.cookies


# jwt mode: identities from the operator's identity service -----------------------------------------


class IdentityService:
    """Signs ES256 tokens; the nodes hold only its public key, in a JWKS file."""

    def __init__(self, jwks_path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwks_path.write_text(json.dumps({"keys": [{**public, "kid": "id-1", "use": "sig"}]}))
        self.jwks_file = str(jwks_path)

    def token(self, user_id: str, ttl: int = 3600, **claims) -> str:
        payload = {"sub": user_id, "exp": int(time.time()) + ttl, "iss": "https://id.test", **claims}
        return jwt.encode(payload, self.key, algorithm="ES256", headers={"kid": "id-1"})


@pytest.fixture(scope="module")
def identity_service(tmp_path_factory) -> IdentityService:
    return IdentityService(tmp_path_factory.mktemp("identity") / "jwks.json")


@pytest.fixture(scope="module")
def jwt_cluster(stack_env, run_prefix, identity_service):
    nodes = Cluster(
        stack_env,
        2,
        JWT_CLUSTER_BASE_PORT,
        f"{run_prefix}jwt",
        auth_mode="jwt",
        jwt_algorithm="ES256",
        jwks_file=identity_service.jwks_file,
        jwt_issuer="https://id.test",
    ).start()
    yield nodes
    nodes.stop()


async def test_jwt_mode_is_published_and_sign_up_by_id_is_off(jwt_cluster):
    async with httpx.AsyncClient(base_url=jwt_cluster.urls[0], timeout=10) as http:
        assert (await http.get("/api/auth")).json()["data"] == {"mode": "jwt"}
        response = await http.post(f"/api/user/enter/{_user()}")
    assert response.status_code == 403
    assert "identity service" in response.json()["message"] and "set-cookie" not in response.headers


async def test_first_valid_token_creates_the_user(jwt_cluster, identity_service, stack):
    refused_user, user = _user("no"), _user("jw")
    users_key = f"{jwt_cluster.prefix}:users"
    async with httpx.AsyncClient(base_url=jwt_cluster.urls[0], timeout=10) as http:
        expired = await http.post(
            "/api/auth/session", headers={"Authorization": f"Bearer {identity_service.token(refused_user, ttl=-5)}"}
        )
        assert expired.status_code == 401
    token = identity_service.token(user)
    async with raw_client(jwt_cluster.urls[1], user, bearer(token)) as client:
        assert (await _session_info(client))["userId"] == user
    room = await create_room(jwt_cluster.urls[0], token, f"jwt-{uuid.uuid4().hex[:6]}")
    assert room["createdBy"] == user
    # The user row's outbox event reaches the consumers, which cache the user: PostgreSQL first.
    with trio.fail_after(30):
        while await stack.redis_cli("SISMEMBER", users_key, user) != "1":
            await trio.sleep(0.2)
    assert await stack.redis_cli("SISMEMBER", users_key, refused_user) == "0"


async def test_jwt_mode_authenticates_the_websocket_by_cookie_and_by_auth_frame(jwt_cluster, identity_service):
    user = _user("jw")
    token = identity_service.token(user)
    async with httpx.AsyncClient(base_url=jwt_cluster.urls[0], timeout=10) as http:
        response = await http.post("/api/auth/session", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["data"]["userId"] == user
        cookie = http.cookies["chattrio_token"]
    async with raw_client(jwt_cluster.urls[1], user, [(b"Cookie", f"chattrio_token={cookie}".encode())]) as client:
        assert (await _session_info(client))["userId"] == user
    async with raw_client(jwt_cluster.urls[0], user) as client:
        await client.send(type="AUTH", token=token)
        assert (await _session_info(client))["userId"] == user


@pytest.mark.parametrize("problem", ["wrong issuer", "node's own kind of token", "not a normalised id", "bad id"])
async def test_jwt_mode_refuses_tokens_it_must_not_trust(jwt_cluster, identity_service, problem):
    token = {
        "wrong issuer": identity_service.token(_user(), iss="https://evil.test"),
        "node's own kind of token": jwt.encode(
            {"sub": _user(), "exp": int(time.time()) + 60}, TEST_SECRET, algorithm="HS256"
        ),
        "not a normalised id": identity_service.token("e\u0301" + _user()),
        "bad id": identity_service.token("a b"),
    }[problem]
    async with raw_client(jwt_cluster.urls[0]) as client:
        await client.send(type="AUTH", token=token)
        code, _ = await _closed(client)
    assert code == CLOSE_POLICY_VIOLATION
    async with httpx.AsyncClient(base_url=jwt_cluster.urls[1], timeout=10) as http:
        response = await http.post(
            "/api/room", json={"name": "untrusted"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 401


async def test_connections_waiting_for_auth_count_against_the_connection_cap(make_cluster):
    node = (await make_cluster(1, max_connections=1)).urls[0]
    user = _user()
    token = await login(node, user)
    async with raw_client(node, user) as waiting:
        async with httpx.AsyncClient(base_url=node, timeout=10) as http:
            refused = await http.get(
                "/ws",
                headers={
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13",
                    "Authorization": f"Bearer {token}",
                },
            )
        assert refused.status_code == 503 and "full" in refused.json()["message"]
        await waiting.send(type="AUTH", token=token)
        assert (await _session_info(waiting))["userId"] == user


async def test_refused_tokens_are_counted_in_metrics(cluster):
    url = cluster.urls[2]

    async def refused() -> float:
        async with httpx.AsyncClient(base_url=cluster.nodes[2].internal_url, timeout=10) as http:
            text = (await http.get("/metrics")).text
        values = [
            float(line.split()[-1]) for line in text.splitlines() if line.startswith("chattrio_tokens_refused_total")
        ]
        return values[0] if values else 0.0  # no line before the first refusal

    before = await refused()
    async with raw_client(url) as client:
        await client.send(type="AUTH", token="forged")
        await _closed(client)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.post("/api/room", json={"name": "x"}, headers={"Authorization": "Bearer forged"})
    assert response.status_code == 401
    assert await refused() - before >= 2
