"""HttpConnection and response_bytes on in-memory streams: what the listener reads and writes."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from chattrio.transport.http11 import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    BadRequest,
    HttpConnection,
    Request,
    Response,
    response_bytes,
)


async def _requests(*reads: bytes) -> tuple[HttpConnection, list[Request | BadRequest]]:
    """Each read taken by itself, then the end of the stream: every request read, and the error
    that ended them."""
    client, server = trio.testing.memory_stream_pair()
    http = HttpConnection()
    got: list[Request | BadRequest] = []

    async def read_all() -> None:
        while True:
            try:
                request = await http.receive_request(server)
            except BadRequest as exc:
                got.append(exc)
                return
            if request is None:
                return
            got.append(request)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        for data in reads:
            await client.send_all(data)
            await trio.testing.wait_all_tasks_blocked()
        await client.send_eof()
    return http, got


async def test_pipelined_requests_come_in_order_and_an_error_behind_them_after():
    data = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
    bad = b"GET /c HTTP/1.1\r\nHost: h\r\n" + b"a: b\r\n" * 200 + b"\r\n"
    _, got = await _requests(data + bad)
    first, second, error = got
    assert isinstance(first, Request) and (first.method, first.path, first.query) == ("GET", "/a", {"x": "1"})
    assert isinstance(second, Request) and (second.method, second.body) == ("POST", b"hi")
    assert isinstance(error, BadRequest) and error.status == 431


async def test_a_head_read_byte_by_byte_is_one_request():
    data = b"GET /slow HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\n\r\n"
    _, (request,) = await _requests(*(data[i : i + 1] for i in range(len(data))))
    assert isinstance(request, Request)
    assert request.path == "/slow" and request.headers == {"host": "h", "cookie": "a=b"}


async def test_a_header_field_that_never_ends_is_refused_once_over_the_head_limit():
    reads = [b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: "] + [b"v" * 4096] * (MAX_HEADER_BYTES // 4096 + 2)
    _, got = await _requests(*reads)
    assert isinstance(got[-1], BadRequest) and got[-1].status == 431


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET //[ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode(), 413),
    ],
)
async def test_requests_that_cannot_be_served_are_refused_with_a_status(head, status):
    _, got = await _requests(head)
    assert isinstance(got[-1], BadRequest) and got[-1].status == status


async def test_a_chunked_body_over_the_limit_is_413():
    chunk = b"%x\r\n%s\r\n" % (MAX_BODY_BYTES, b"x" * MAX_BODY_BYTES)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, got = await _requests(head + chunk + chunk + b"0\r\n\r\n")
    assert isinstance(got[-1], BadRequest) and got[-1].status == 413


@pytest.mark.parametrize(
    "head, keep_alive",
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),  # HTTP/1.0: one request per connection
    ],
)
async def test_keep_alive_follows_the_request(head, keep_alive):
    http, (request,) = await _requests(head)
    assert isinstance(request, Request) and http.keep_alive is keep_alive


async def test_an_upgrade_request_keeps_what_followed_it_and_ends_the_requests():
    head = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    http, got = await _requests(head + b"\x81\x80frame" + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(got) == 1 and isinstance(got[0], Request) and got[0].headers["upgrade"] == "websocket"
    assert http.trailing_data == b"\x81\x80frameGET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert http.keep_alive is False


def test_a_response_says_connection_close_when_the_connection_ends_after_it():
    kept = response_bytes(Response(200, b"{}"), keep_alive=True)
    closed = response_bytes(Response(200, b"{}"), keep_alive=False)
    assert kept.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 2\r\n" in kept and kept.endswith(b"\r\n\r\n{}")
    assert b"Connection: close" not in kept
    assert closed.count(b"Connection: close\r\n") == 1
    own = response_bytes(Response(503, b"{}", headers=[("Connection", "close")]), keep_alive=False)
    assert own.count(b"Connection: close\r\n") == 1


def test_a_head_answer_has_the_length_and_no_body():
    raw = response_bytes(Response(200, b"0123456789", head_only=True), keep_alive=True)
    assert raw.endswith(b"Content-Length: 10\r\n\r\n")


@pytest.mark.parametrize("name, value", [("Set-Cookie", "a=b\r\nX-Injected: 1"), ("X\nY", "v"), ("X", "a\x00")])
def test_a_header_that_would_break_the_head_is_refused(name, value):
    with pytest.raises(ValueError):
        response_bytes(Response(200, headers=[(name, value)]), keep_alive=True)
