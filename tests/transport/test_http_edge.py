"""HTTP edge cases on a node's own listener: careless and hostile clients get a clear 4xx (or a
close), never a 500, a traceback or a connection held without limit; and the operational
endpoints answer only on the internal port."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
import trio
from client import connect, login

from chattrio.tokens import issue_token
from chattrio.transport.http11 import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADER_FIELDS

SECRET = "test-secret"  # what conftest gives the nodes


def _user(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _exchange(url: str, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes and read until the node closes the connection; fails if it does not."""
    stream = await trio.open_tcp_stream(*_address(url))
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(timeout):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _closes(raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    return b"\r\nconnection: close" in head


async def _metric(node, name: str) -> float:
    async with httpx.AsyncClient(base_url=node.internal_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


# HEAD ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/api/openapi.yaml", "/api/room"])
async def test_head_is_answered_like_get_without_a_body(cluster, path):
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        head = await http.head(path)
        get = await http.get(path)  # on the same kept-alive connection
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_head_on_the_internal_port(cluster):
    async with httpx.AsyncClient(base_url=cluster.nodes[0].internal_url, timeout=10) as http:
        response = await http.head("/readyz")
    assert response.status_code == 200 and response.content == b""


# Framing and limits ----------------------------------------------------------------------------


async def test_oversized_content_length_is_413_before_the_body(cluster):
    head = f"POST /api/room HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    raw = await _exchange(cluster.urls[0], head.encode())  # no body sent: the node must not wait for it
    assert _status(raw) == 413 and _closes(raw)
    assert b"request body over" in raw


async def test_content_length_with_transfer_encoding_is_400_and_closed(cluster):
    request = (
        b"POST /api/room HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    raw = await _exchange(cluster.urls[0], request)
    assert _status(raw) == 400 and _closes(raw)
    assert raw.count(b"HTTP/1.1 ") == 1  # the smuggled second request was not answered


@pytest.mark.parametrize("fields, status", [(MAX_HEADER_FIELDS, 200), (MAX_HEADER_FIELDS + 1, 431), (13_000, 431)])
async def test_header_field_count_is_limited(cluster, fields, status):
    # Host and Connection count; the rest are one-letter fields.
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"a:\r\n" * (fields - 2) + b"\r\n"
    raw = await _exchange(cluster.urls[1], head)
    assert _status(raw) == status


async def test_header_limits_apply_to_a_pipelined_request_too(cluster):
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * 1000 + b"\r\n"
    raw = await _exchange(cluster.urls[1], first + second)  # one write: the node reads both at once
    assert _status(raw) == 200
    assert _status(raw[raw.index(b"HTTP/1.1 ", 1) :]) == 431


async def test_header_block_over_the_size_limit_is_431(cluster):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * MAX_HEADER_BYTES + b"\r\n\r\n"
    raw = await _exchange(cluster.urls[1], head)
    assert _status(raw) == 431 and _closes(raw)


@pytest.mark.parametrize("target", [b"//[", b"http://[/x"])
async def test_malformed_request_target_is_400(cluster, target):
    raw = await _exchange(cluster.urls[2], b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(raw) == 400 and b"malformed request target" in raw


@pytest.mark.parametrize("key", [b"dGhlIHNhbXBsZSBub25jZQ\xe9\xe9", b"not base64!", b"c2hvcnQ=", b""])
async def test_bad_websocket_key_is_400(cluster, key):
    token = issue_token(_user(), SECRET, 3600)[0]
    request = (
        b"GET /ws?token=" + token.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
    )
    raw = await _exchange(cluster.urls[2], request)
    assert _status(raw) == 400 and b"bad WebSocket handshake" in raw


# Slow readers and many connections -------------------------------------------------------------


async def test_a_client_that_does_not_read_is_dropped_at_the_write_deadline(cluster):
    node = cluster.nodes[2]
    before = await _metric(node, "chattrio_http_write_timeouts_total")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(_address(node.url))
    requests = 2000  # ~10 KB answers each: far more than the socket buffers hold
    pipelined = b"GET /api/openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n" * requests
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sock.send, pipelined)
        with trio.fail_after(60):
            while await _metric(node, "chattrio_http_write_timeouts_total") == before:
                await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    received = b""
    with trio.fail_after(30):
        try:
            while chunk := await sock.recv(1 << 20):
                received += chunk
        except ConnectionResetError:
            pass  # the node closed with requests unread: a reset, after what it had sent
    sock.close()
    assert received.count(b"HTTP/1.1 200 ") < requests


async def test_plain_http_connections_are_capped_websockets_are_not(make_cluster):
    node = (await make_cluster(1, max_http_connections=2)).nodes[0]
    held = []
    try:
        for _ in range(2):  # two kept-alive connections, each seen by the node (it answered)
            stream = await trio.open_tcp_stream(*_address(node.url))
            held.append(stream)
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            with trio.fail_after(10):
                while b'"alive"' not in received:
                    received += await stream.receive_some(65536)
        raw = await _exchange(node.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(raw) == 503 and _closes(raw) and b"node busy" in raw
        assert await _metric(node, "chattrio_http_connections_refused_total") >= 1
    finally:
        for stream in held:
            await stream.aclose()
    # Upgraded connections no longer count: more sessions than the cap, and HTTP still answers.
    async with connect(node.url, _user("w1")), connect(node.url, _user("w2")), connect(node.url, _user("w3")):
        with trio.fail_after(15):
            while True:  # the closed connections leave the count as the node notices them
                raw = await _exchange(node.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if _status(raw) == 200:
                    break
                await trio.sleep(0.1)


# The static files ------------------------------------------------------------------------------


async def test_odd_static_paths_are_4xx_or_the_client_not_500(make_cluster, tmp_path):
    (tmp_path / "index.html").write_text("<p>chattrio</p>")
    node = (await make_cluster(1, web_root=str(tmp_path))).nodes[0]
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        nul = await http.get("/a%00b")
        long_name = await http.get("/" + "a" * 300)
        head = await http.head("/")
    assert nul.status_code == 400 and "NUL" in nul.json()["message"]
    assert long_name.status_code == 200 and long_name.text == "<p>chattrio</p>"
    assert head.status_code == 200 and head.content == b""


# Writes: JSON only, and cookies only from this origin -------------------------------------------


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("text/plain", '{"name": "x"}'),
        ("application/x-www-form-urlencoded", "name=x"),
        ("multipart/form-data; boundary=b", '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n'),
        (None, '{"name": "x"}'),
    ],
)
async def test_room_bodies_other_than_json_are_415(cluster, content_type, body):
    token = await login(cluster.urls[0], _user())
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.post("/api/room", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["message"]


async def test_json_with_a_charset_is_accepted(cluster):
    token = await login(cluster.urls[0], _user())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"}
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.post("/api/room", content=b'{"name": "charset"}', headers=headers)
    assert response.status_code == 201, response.text


async def _post_room_with_cookie(url: str, token: str, headers: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return await http.post(
            "/api/room",
            json={"name": f"csrf-{uuid.uuid4().hex[:6]}"},
            headers={"Cookie": f"chattrio_token={token}", **headers},
        )


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://["},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_cookie_authenticated_write_from_another_origin_is_403(cluster, headers):
    url = cluster.urls[1]
    token = await login(url, _user())
    response = await _post_room_with_cookie(url, token, headers)
    assert response.status_code == 403, response.text
    assert "origin" in response.json()["message"]


async def test_cookie_authenticated_write_from_its_own_page_is_accepted(cluster):
    url = cluster.urls[1]
    token = await login(url, _user())
    own = await _post_room_with_cookie(url, token, {"Origin": url, "Sec-Fetch-Site": "same-origin"})
    not_a_browser = await _post_room_with_cookie(url, token, {})
    assert own.status_code == 201, own.text
    assert not_a_browser.status_code == 201, not_a_browser.text


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Origin": "http://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site", "Origin": "http://chat.evil.example"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, 201),
        ({}, 201),
    ],
)
async def test_sign_in_from_another_origin_is_403(cluster, headers, status):
    url = cluster.urls[2]
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        if "Sec-Fetch-Site" in headers and status == 201:
            headers = {**headers, "Origin": url}
        response = await http.post(f"/api/user/enter/{_user('si')}", headers=headers)
    assert response.status_code == status, response.text
    assert ("set-cookie" in response.headers) is (status == 201)


async def test_bearer_token_writes_do_not_depend_on_the_origin(cluster):
    url = cluster.urls[1]
    token = await login(url, _user())
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.post(
            "/api/room",
            json={"name": "bearer"},
            headers={"Authorization": f"Bearer {token}", "Origin": "http://other.example"},
        )
    assert response.status_code == 201, response.text


# The internal port -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
async def test_operational_endpoints_are_not_on_the_public_port(cluster, path):
    node = cluster.nodes[0]
    async with httpx.AsyncClient(timeout=10) as http:
        public = await http.get(node.url + path)
        internal = await http.get(node.internal_url + path)
    assert public.status_code == 404 and "internal port" in public.json()["message"]
    assert internal.status_code == 200


async def test_public_liveness_stays_and_the_internal_port_serves_no_api(cluster):
    node = cluster.nodes[0]
    async with httpx.AsyncClient(timeout=10) as http:
        healthz = await http.get(node.url + "/healthz")
        api = await http.get(node.internal_url + "/api/room")
        ws = await http.get(node.internal_url + "/ws", headers={"Upgrade": "websocket"})
    assert healthz.status_code == 200 and healthz.json()["data"] == {"nodeId": "node-1"}
    assert api.status_code == 404 and ws.status_code == 404


async def test_openapi_document_missing_from_an_installation_is_404(monkeypatch, tmp_path):
    from chattrio import api
    from chattrio.config import Settings
    from chattrio.metrics import Registry
    from chattrio.transport.http11 import Request

    monkeypatch.setattr(api, "OPENAPI_PATH", tmp_path / "openapi.yaml")
    node_api = api.Api(Settings(dev_mode=True), None, None, None, Registry(), lambda: [])
    response = await node_api.handle(Request("GET", "/api/openapi.yaml", {}, {}, b""))
    assert response.status == 404 and b"not installed" in response.body
