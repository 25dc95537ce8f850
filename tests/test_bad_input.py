"""Bad input against real nodes: every error of docs/protocol.md, and the connection survives it."""

from __future__ import annotations

import itertools
import json
import struct
import unicodedata
import urllib.parse
import uuid

import httpx
import pytest
import trio
from client import connect, create_room, login
from trio_websocket import HandshakeError, open_websocket_url

from chattrio.tokens import issue_token

SECRET = "test-secret-of-the-pytest-nodes-0123456789"  # what conftest gives the nodes
WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
MAX_FRAME = 64 * 1024
_refs = itertools.count()


def _user(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def _assert_alive(client) -> None:
    """After an ERROR the connection stays open: a PING still gets its PONG."""
    ref = f"alive-{next(_refs)}"
    await client.send(type="PING", ref=ref)
    pong = await client.wait_for(lambda f: f.get("ref") == ref, timeout=10)
    assert pong == {"type": "PONG", "ref": ref}
    assert client.closed is None


async def _error_after(client, send) -> dict:
    """Send something, return the first ERROR frame received after it."""
    seen = len(client.frames)
    await send()
    await client.wait_until(lambda: any(f["type"] == "ERROR" for f in client.frames[seen:]), timeout=10)
    return next(f for f in client.frames[seen:] if f["type"] == "ERROR")


@pytest.fixture
async def room(cluster):
    token = await login(cluster.urls[0], _user("owner"))
    return await create_room(cluster.urls[0], token, f"bad-input-{uuid.uuid4().hex[:6]}")


# WebSocket frames ------------------------------------------------------------------------------

BAD_FRAMES = [
    # (raw text, expected code, expected ref)
    ("{", "BAD_FRAME", None),
    ("not json at all", "BAD_FRAME", None),
    ('{"type": "PING"', "BAD_FRAME", None),
    ("{'type': 'PING'}", "BAD_FRAME", None),
    ("", "BAD_FRAME", None),
    ("[]", "BAD_FRAME", None),
    ('[{"type": "PING"}]', "BAD_FRAME", None),
    ('"PING"', "BAD_FRAME", None),
    ("42", "BAD_FRAME", None),
    ("null", "BAD_FRAME", None),
    ('{"ref": "m1"}', "BAD_FRAME", "m1"),
    ('{"type": 7, "ref": "m2"}', "BAD_FRAME", "m2"),
    ('{"type": null, "ref": "m3"}', "BAD_FRAME", "m3"),
    ('{"type": "HELLO", "ref": "u1"}', "UNKNOWN_TYPE", "u1"),
    ('{"type": "ping", "ref": "u2"}', "UNKNOWN_TYPE", "u2"),
    ('{"type": "", "ref": "u3"}', "UNKNOWN_TYPE", "u3"),
    ('{"type": "SEND", "roomId": "1", "text": "x", "ref": "w1"}', "BAD_FRAME", "w1"),
    ('{"type": "SEND", "roomId": 1.5, "text": "x", "ref": "w2"}', "BAD_FRAME", "w2"),
    ('{"type": "SEND", "roomId": true, "text": "x", "ref": "w3"}', "BAD_FRAME", "w3"),
    ('{"type": "SEND", "roomId": 1, "text": 5, "ref": "w4"}', "BAD_FRAME", "w4"),
    ('{"type": "SEND", "roomId": 1, "ref": "w5"}', "BAD_FRAME", "w5"),
    ('{"type": "SEND", "text": "x", "ref": "w6"}', "BAD_FRAME", "w6"),
    ('{"type": "SEND", "roomId": 1, "text": "x", "clientMsgId": "", "ref": "w7"}', "BAD_FRAME", "w7"),
    ('{"type": "SEND", "roomId": 1, "text": "x", "clientMsgId": 3, "ref": "w8"}', "BAD_FRAME", "w8"),
    ('{"type": "SUBSCRIBE", "ref": "w9"}', "BAD_FRAME", "w9"),
    ('{"type": "SUBSCRIBE", "destination": 42, "ref": "w10"}', "BAD_FRAME", "w10"),
    ('{"type": "SUBSCRIBE", "destination": "/topic/message/1", "since": "5", "ref": "w11"}', "BAD_FRAME", "w11"),
    ('{"type": "UNSUBSCRIBE", "ref": "w12"}', "BAD_FRAME", "w12"),
    ('{"type": "PING", "ref": 5}', "BAD_FRAME", None),
    (json.dumps({"type": "SEND", "roomId": 1, "text": "x", "clientMsgId": "c" * 65, "ref": "w13"}), "BAD_FRAME", "w13"),
    (json.dumps({"type": "PING", "ref": "r" * 65}), "BAD_FRAME", "r" * 65),
    ('{"type": "SEND", "roomId": 1, "text": "a\\ud800b", "ref": "s1"}', "BAD_FRAME", None),  # lone surrogate
    ('{"type": "PING", "ref": "\\udc00"}', "BAD_FRAME", None),
]


@pytest.mark.parametrize("raw, code, ref", BAD_FRAMES)
async def test_bad_frames_get_an_error_and_the_connection_stays(cluster, raw, code, ref):
    async with connect(cluster.urls[0], _user()) as client:
        error = await _error_after(client, lambda: client.ws.send_message(raw))
        assert error["code"] == code, error
        assert error["ref"] == ref
        assert isinstance(error["message"], str) and error["message"]
        await _assert_alive(client)


async def test_many_bad_frames_in_a_row_do_not_close_the_connection(cluster):
    async with connect(cluster.urls[1], _user()) as client:
        for raw, _, _ in BAD_FRAMES:
            await client.ws.send_message(raw)
        await _assert_alive(client)
        codes = [e["code"] for e in client.errors()]
        assert codes == [code for _, code, _ in BAD_FRAMES]


async def test_frame_over_64_kib_is_too_large(cluster):
    async with connect(cluster.urls[0], _user()) as client:
        frame = '{"type": "PING", "ref": "big"}'
        raw = frame + " " * (MAX_FRAME + 1 - len(frame))
        assert len(raw.encode()) == MAX_FRAME + 1
        error = await _error_after(client, lambda: client.ws.send_message(raw))
        assert error["code"] == "TOO_LARGE" and error["ref"] is None
        assert not any(f["type"] == "PONG" and f.get("ref") == "big" for f in client.frames)
        await _assert_alive(client)


async def test_frame_of_exactly_64_kib_is_accepted(cluster):
    async with connect(cluster.urls[0], _user()) as client:
        frame = '{"type": "PING", "ref": "edge"}'
        raw = frame + " " * (MAX_FRAME - len(frame))
        assert len(raw.encode()) == MAX_FRAME
        await client.ws.send_message(raw)
        assert await client.wait_for(lambda f: f.get("ref") == "edge", timeout=10) == {"type": "PONG", "ref": "edge"}
        assert client.errors() == []


async def test_large_multibyte_frame_is_measured_in_bytes(cluster):
    async with connect(cluster.urls[0], _user()) as client:
        # 30000 "가" are 90000 UTF-8 bytes: over the limit although fewer than 64 Ki characters
        raw = json.dumps({"type": "PING", "ref": "kr", "pad": "가" * 30_000}, ensure_ascii=False)
        error = await _error_after(client, lambda: client.ws.send_message(raw))
        assert error["code"] == "TOO_LARGE"
        await _assert_alive(client)


async def test_binary_frame_is_not_supported(cluster):
    async with connect(cluster.urls[2], _user()) as client:
        error = await _error_after(client, lambda: client.ws.send_message(b'{"type": "PING", "ref": "bin"}'))
        assert error["code"] == "BINARY_NOT_SUPPORTED" and error["ref"] is None
        assert not any(f.get("ref") == "bin" for f in client.frames if f["type"] == "PONG")
        await _assert_alive(client)


@pytest.mark.parametrize(
    "destination",
    [
        "/topic/foo",
        "/topic/message/",
        "/topic/message/abc",
        "/topic/message/-1",
        "/topic/message/1.5",
        "/topic/message/1/2",
        "/topic/message/４２",
        "/topic/message/" + "9" * 19,
        "topic/rooms",
        "",
    ],
)
async def test_bad_destination(cluster, destination):
    async with connect(cluster.urls[0], _user()) as client:
        await client.send(type="SUBSCRIBE", destination=destination, ref="bd")
        error = await client.wait_for(lambda f: f.get("ref") == "bd", timeout=10)
        assert error["type"] == "ERROR" and error["code"] == "BAD_DESTINATION", error
        await _assert_alive(client)


@pytest.mark.parametrize("room_id", [0, 999_999_999, 10**17])
async def test_subscribe_to_an_unknown_room(cluster, room_id):
    async with connect(cluster.urls[1], _user()) as client:
        error = await client.subscribe(room_id, ref="nr")
        assert error["type"] == "ERROR" and error["code"] == "NO_SUCH_ROOM", error
        assert str(room_id) in error["message"]
        await _assert_alive(client)


async def test_send_to_a_room_not_entered(cluster, room):
    async with connect(cluster.urls[0], _user()) as client:
        reply = await client.send_chat(room["id"], "hello", ref="ns1")
        assert reply["type"] == "ERROR" and reply["code"] == "NOT_SUBSCRIBED" and reply["ref"] == "ns1"
        reply = await client.send_chat(999_999_999, "hello", ref="ns2")
        assert reply["type"] == "ERROR" and reply["code"] == "NOT_SUBSCRIBED"
        await _assert_alive(client)
        # after entering the room the same send works; after leaving it fails again
        assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        assert (await client.send_chat(room["id"], "hello", ref="ns3"))["type"] == "ACK"
        await client.send(type="UNSUBSCRIBE", destination=f"/topic/message/{room['id']}", ref="un")
        assert (await client.wait_for(lambda f: f.get("ref") == "un"))["type"] == "UNSUBSCRIBED"
        reply = await client.send_chat(room["id"], "hello again", ref="ns4")
        assert reply["type"] == "ERROR" and reply["code"] == "NOT_SUBSCRIBED"
        await _assert_alive(client)


async def test_unsubscribe_from_a_room_not_entered(cluster, room):
    async with connect(cluster.urls[0], _user()) as client:
        await client.send(type="UNSUBSCRIBE", destination=f"/topic/message/{room['id']}", ref="u1")
        error = await client.wait_for(lambda f: f.get("ref") == "u1")
        assert error["type"] == "ERROR" and error["code"] == "NOT_SUBSCRIBED"
        await client.send(type="UNSUBSCRIBE", destination="/topic/nonsense", ref="u2")
        error = await client.wait_for(lambda f: f.get("ref") == "u2")
        assert error["type"] == "ERROR" and error["code"] in ("NOT_SUBSCRIBED", "BAD_DESTINATION")
        await _assert_alive(client)


@pytest.mark.parametrize("text", ["", " ", "  \n\t ", "\u00a0\u3000", "x" * 4001, "가" * 4001, "a\u0000b", "\u0000"])
async def test_bad_text(cluster, room, text):
    async with connect(cluster.urls[2], _user()) as client:
        assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        reply = await client.send_chat(room["id"], text, client_msg_id=str(uuid.uuid4()), ref="bt")
        assert reply["type"] == "ERROR" and reply["code"] == "BAD_TEXT" and reply["ref"] == "bt", reply
        await _assert_alive(client)
    # nothing was stored
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        history = (await http.get(f"/api/room/{room['id']}/messages")).json()["data"]
    assert [m for m in history if m["kind"] == "chat"] == []


@pytest.mark.parametrize("client_msg_id", ["c\u0000", "\u0000", "c\n1", "\u001b[2J", "c\u202e1"])
async def test_bad_client_msg_id_is_bad_text(cluster, room, client_msg_id):
    async with connect(cluster.urls[1], _user()) as client:
        assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        reply = await client.send_chat(room["id"], "hello", client_msg_id=client_msg_id, ref="bc")
        assert reply["type"] == "ERROR" and reply["code"] == "BAD_TEXT" and reply["ref"] == "bc", reply
        assert "clientMsgId" in reply["message"]
        await _assert_alive(client)
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        history = (await http.get(f"/api/room/{room['id']}/messages")).json()["data"]
    assert [m for m in history if m["kind"] == "chat"] == []


@pytest.mark.parametrize("text", ["x" * 4000, "가" * 4000, "😀" * 4000, " padded "])
async def test_text_at_the_limit_is_accepted(cluster, room, text):
    async with connect(cluster.urls[0], _user()) as client:
        assert (await client.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        reply = await client.send_chat(room["id"], text, client_msg_id=str(uuid.uuid4()), ref="ok")
        assert reply["type"] == "ACK", reply
        message = await client.wait_for(lambda f: f["type"] == "ROOM_MESSAGE" and f["message"]["id"] == reply["id"])
        assert message["message"]["text"] == text


# Handshake ------------------------------------------------------------------------------------


async def _handshake(url: str, headers: dict | None = None, params: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return await http.get("/ws", headers={**WS_HEADERS, **(headers or {})}, params=params)


@pytest.mark.parametrize("token", ["forged", "abc.def", "a.b.c", issue_token("alice", "wrong-secret", 3600)[0]])
async def test_handshake_with_forged_token_is_401(cluster, token):
    response = await _handshake(cluster.urls[1], headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["success"] is False


async def test_handshake_with_expired_token_is_401(cluster):
    token, _ = issue_token("alice", SECRET, -60)
    for how in ({"headers": {"Authorization": f"Bearer {token}"}}, {"headers": {"Cookie": f"chattrio_token={token}"}}):
        response = await _handshake(cluster.urls[0], **how)
        assert response.status_code == 401, how
        assert "expired" in response.json()["message"]


async def test_handshake_with_foreign_origin_is_403(cluster):
    token, _ = issue_token("alice", SECRET, 3600)
    for origin in ("http://evil.example", "http://127.0.0.1:1", "null"):
        response = await _handshake(cluster.urls[0], headers={"Origin": origin, "Authorization": f"Bearer {token}"})
        assert response.status_code == 403, origin


async def test_handshake_with_own_origin_and_header_token_is_accepted(cluster):
    url = cluster.urls[0]
    token = await login(url, _user())
    ws_url = url.replace("http://", "ws://") + "/ws"
    headers = [(b"Origin", url.encode()), (b"Authorization", f"Bearer {token}".encode())]
    async with open_websocket_url(ws_url, extra_headers=headers) as ws:
        with trio.fail_after(10):
            info = json.loads(await ws.get_message())
        assert info["type"] == "session-info" and info["nodeId"] == "node-1"


async def test_handshake_refusal_is_reported_to_a_websocket_client(cluster):
    ws_url = cluster.urls[0].replace("http://", "ws://") + "/ws"
    with pytest.raises(HandshakeError):
        async with open_websocket_url(ws_url, extra_headers=[(b"Authorization", b"Bearer forged")]):
            pass


async def test_websocket_on_another_path_is_404(cluster):
    token, _ = issue_token("alice", SECRET, 3600)
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.get("/chat", headers={**WS_HEADERS, "Authorization": f"Bearer {token}"})
    assert response.status_code == 404


async def test_handshake_with_non_ascii_token_is_401(cluster):
    response = await _handshake(cluster.urls[0], headers={"Authorization": "Bearer abc.é".encode()})
    assert response.status_code == 401


# REST -----------------------------------------------------------------------------------------


async def _enter(url: str, raw_path_segment: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return await http.post(f"/api/user/enter/{raw_path_segment}")


@pytest.mark.parametrize(
    "segment, fragment",
    [
        ("", "got 0"),
        ("x" * 33, "got 33"),
        ("a%20b", "' '"),
        ("a%2Fb", "'/'"),
        ("%F0%9F%98%80", "'😀'"),
        ("a%40b", "'@'"),
        ("%FF", "UTF-8"),
        ("e%CC%81" * 33, "got 33"),
        ("a%00b", "'\\x00'"),
        ("%00", "'\\x00'"),
        ("%D0%B0lice", "mixes scripts"),  # Cyrillic а + "lice"
        ("%E3%85%A4", "invisible"),
        ("alice%E3%85%A4", "invisible"),  # Hangul filler U+3164
        ("%E2%80%AEalice", "invisible"),
        ("%CC%81x", "'\u0301'"),
    ],
)
async def test_invalid_user_ids_are_400(cluster, segment, fragment):
    response = await _enter(cluster.urls[0], segment)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert fragment in body["message"]


@pytest.mark.parametrize("base", ["김철수", "ünïcode", "ωμέγα", "अनिल", "วิชัย", "32 characters"])
async def test_valid_non_latin_user_ids(cluster, base):
    # unique per run: the stack's database outlives test runs; digits belong to no script
    user_id = uuid.uuid4().hex if base == "32 characters" else base + str(uuid.uuid4().int)[:8]
    assert len(user_id) <= 32
    response = await _enter(cluster.urls[0], user_id)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["userId"] == user_id and response.json()["data"]["created"] is True
    again = await _enter(cluster.urls[1], user_id)
    assert again.status_code == 200 and again.json()["data"]["created"] is False


async def test_user_id_is_nfc_normalised(cluster):
    suffix = uuid.uuid4().hex[:6]
    decomposed = "u\u0308ni\u0308code" + suffix
    composed = unicodedata.normalize("NFC", decomposed)
    assert composed != decomposed
    first = await _enter(cluster.urls[0], decomposed)
    assert first.status_code == 201
    assert first.json()["data"]["userId"] == composed
    second = await _enter(cluster.urls[2], composed)
    assert second.status_code == 200 and second.json()["data"]["created"] is False
    # the token is for the normalised id
    async with connect(cluster.urls[1], composed, first.json()["data"]["token"]) as client:
        info = next(f for f in client.frames if f["type"] == "session-info")
        assert info["userId"] == composed


async def test_fullwidth_and_upper_case_ids_are_the_same_user(cluster):
    user_id = f"wide{uuid.uuid4().hex[:8]}"
    first = await _enter(cluster.urls[0], user_id)
    assert first.status_code == 201
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in user_id.upper())  # ＷＩＤＥ...
    for spelling in (user_id.upper(), fullwidth):
        again = await _enter(cluster.urls[1], urllib.parse.quote(spelling))
        assert again.status_code == 200, again.text
        assert again.json()["data"]["userId"] == user_id and again.json()["data"]["created"] is False


async def _create(url: str, *, body=None, content=None, token: str | None = None, params=None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        if content is not None:
            headers["Content-Type"] = "application/json"
            return await http.post("/api/room", content=content, headers=headers, params=params)
        return await http.post("/api/room", json=body, headers=headers, params=params)


async def test_create_room_without_token_is_401(cluster):
    response = await _create(cluster.urls[0], body={"name": "no-token"})
    assert response.status_code == 401 and response.json()["success"] is False


@pytest.mark.parametrize("token", ["forged", issue_token("alice", SECRET, -5)[0], issue_token("alice", "x", 60)[0]])
async def test_create_room_with_bad_token_is_401(cluster, token):
    response = await _create(cluster.urls[0], body={"name": "bad-token"}, token=token)
    assert response.status_code == 401


async def test_create_room_with_non_ascii_token_is_401(cluster):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.post(
            "/api/room", json={"name": "bad-token"}, headers={"Authorization": "Bearer abc.é".encode()}
        )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body, content, fragment",
    [
        (None, b"{not json", "valid JSON"),
        (None, b"", "valid JSON"),
        ([1, 2], None, "JSON object"),
        ("general", None, "JSON object"),
        ({}, None, "must be a string"),
        ({"name": 42}, None, "must be a string"),
        ({"name": None}, None, "must be a string"),
        ({"name": ""}, None, "1-100"),
        ({"name": "   \t "}, None, "1-100"),
        ({"name": "x" * 101}, None, "1-100"),
        ({"name": "a\u0000b"}, None, "must not contain"),
        ({"name": "\u0000"}, None, "must not contain"),
        ({"name": "\u200b\u3164"}, None, "visible character"),
        ({"name": "\u202e\u2066"}, None, "1-100"),
    ],
)
async def test_bad_room_bodies_are_400(cluster, body, content, fragment):
    token = await login(cluster.urls[0], _user())
    response = await _create(cluster.urls[0], body=body, content=content, token=token)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


async def test_room_name_is_trimmed_and_100_characters_is_fine(cluster):
    token = await login(cluster.urls[0], _user())
    response = await _create(cluster.urls[0], body={"name": "  " + "r" * 100 + "  "}, token=token)
    assert response.status_code == 201
    assert response.json()["data"]["name"] == "r" * 100


@pytest.mark.parametrize(
    "raw, name",
    [("\u202eevil", "evil"), ("\u001b[31mred\u001b[0m", "red"), ("bell\u0007", "bell"), ("tab\there", "tab here")],
)
async def test_room_names_lose_control_and_bidi_characters(cluster, raw, name):
    token = await login(cluster.urls[0], _user())
    response = await _create(cluster.urls[0], body={"name": raw}, token=token)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["name"] == name


async def test_body_over_64_kib_is_413(cluster):
    token = await login(cluster.urls[0], _user())
    response = await _create(cluster.urls[0], body={"name": "x" * (70 * 1024)}, token=token)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1.5", "before=abc", "before=-1"]
)
async def test_bad_history_params_are_400(cluster, room, query):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.get(f"/api/room/{room['id']}/messages?{query}")
    assert response.status_code == 400, response.text
    assert query.split("=")[0] in response.json()["message"]


@pytest.mark.parametrize("query", ["limit=1", "limit=100", "", "before=5&limit=50", "limit="])
async def test_good_history_params(cluster, room, query):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.get(f"/api/room/{room['id']}/messages?{query}")
    assert response.status_code == 200 and isinstance(response.json()["data"], list)


@pytest.mark.parametrize(
    "path",
    ["/api/room/999999999", "/api/room/999999999/messages", "/api/room/999999999/members", "/api/room/0/messages"],
)
async def test_unknown_room_is_404(cluster, path):
    async with httpx.AsyncClient(base_url=cluster.urls[1], timeout=10) as http:
        response = await http.get(path)
    assert response.status_code == 404
    assert response.json()["success"] is False and "does not exist" in response.json()["message"]


@pytest.mark.parametrize("path", ["/api/room/abc", "/api/room/-1/messages", "/api/room/1.5", "/api/room/%EC%B2%A0"])
async def test_non_numeric_room_id_is_400(cluster, path):
    async with httpx.AsyncClient(base_url=cluster.urls[1], timeout=10) as http:
        response = await http.get(path)
    assert response.status_code == 400
    assert "positive integer" in response.json()["message"]


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("DELETE", "/api/room", "GET, POST"),
        ("PUT", "/api/room", "GET, POST"),
        ("GET", "/api/user/enter/alice", "POST"),
        ("POST", "/api/room/1", "GET"),
        ("DELETE", "/api/room/1/messages", "GET"),
        ("POST", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
    ],
)
async def test_wrong_method_is_405(cluster, method, path, allow):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"success": False, "message": "method not allowed", "data": None}


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/nope"),
        ("POST", "/api/nope"),
        ("GET", "/api/rooms"),
        ("GET", "/api/room/1/nope"),
        ("POST", "/api/user/enter"),
        ("POST", "/api/user/enter/a/b"),
        ("GET", "/api/"),
        ("DELETE", "/api/x"),
    ],
)
async def test_unknown_api_path_is_404(cluster, method, path):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.request(method, path)
    assert response.status_code == 404
    assert response.json()["success"] is False


async def test_errors_are_counted_in_metrics(cluster):
    url = cluster.urls[2]

    async def count() -> float:
        async with httpx.AsyncClient(base_url=cluster.nodes[2].internal_url, timeout=10) as http:
            text = (await http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith('chattrio_frame_errors_total{code="UNKNOWN_TYPE"}'):
                return float(line.split()[-1])
        return 0.0

    before = await count()
    async with connect(url, _user()) as client:
        for n in range(3):
            await client.send(type="NOPE", ref=f"n{n}")
        await client.wait_until(lambda: len(client.errors()) == 3)
    assert await count() - before >= 3


# A client that vanishes -------------------------------------------------------------------------


async def _open_connections(node) -> float:
    """The node's open TCP connections on its public port (asked on the internal one)."""
    async with httpx.AsyncClient(base_url=node.internal_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("chattrio_connections "))


async def _raw_session_in_room(url: str, room_id: int) -> trio.socket.SocketType:
    """A WebSocket session entered in the room, on a bare socket the test can reset."""
    host, port = url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    await sock.connect((host, int(port)))
    token = issue_token(_user("gone"), SECRET, 3600)[0]
    request = "".join(f"{k}: {v}\r\n" for k, v in {**WS_HEADERS, "Host": f"{host}:{port}"}.items())
    await sock.send(f"GET /ws HTTP/1.1\r\nAuthorization: Bearer {token}\r\n{request}\r\n".encode())
    subscribe = json.dumps({"type": "SUBSCRIBE", "destination": f"/topic/message/{room_id}", "ref": "in"}).encode()
    assert len(subscribe) < 126
    received = b""
    with trio.fail_after(10):
        while b"101 " not in received:
            received += await sock.recv(65536)
        await sock.send(bytes((0x81, 0x80 | len(subscribe))) + b"\0\0\0\0" + subscribe)  # zero mask
        while b'"SUBSCRIBED"' not in received:
            received += await sock.recv(65536)
    return sock


async def test_a_client_that_vanishes_mid_chat_is_not_a_node_error(cluster, room):
    """A connection reset by the client ends that session quietly: no error log, no crash."""
    url, node = cluster.urls[0], cluster.nodes[0]
    failures_before = node.log_path.read_text(errors="replace").count("connection failed")
    connections_before = await _open_connections(node)
    sock = await _raw_session_in_room(url, room["id"])
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST: the node's next read or write on it fails
    async with connect(url, _user("talker")) as talker:
        await talker.subscribe(room["id"])
        for n in range(5):
            assert (await talker.send_chat(room["id"], f"to the gone {n}"))["type"] == "ACK"
        await _assert_alive(talker)
    # The node counts a connection as closed only after it has logged how it ended.
    with trio.fail_after(10):
        while await _open_connections(node) > connections_before:
            await trio.sleep(0.1)
    assert node.log_path.read_text(errors="replace").count("connection failed") == failures_before
    assert node.alive
